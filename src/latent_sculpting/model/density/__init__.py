"""Stage 2: the Masked Autoregressive Flow over benign inputs, its training and fast path."""
