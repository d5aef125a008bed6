"""Stage 1: the sculpting encoder, its losses and its training."""
