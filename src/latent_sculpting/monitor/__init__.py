"""Watching a deployed detector: input drift, and explanations of alerts."""
