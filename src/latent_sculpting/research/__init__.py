"""Experiments and the zero-day benchmark: the paper's experiment, baselines, metrics,
statistics, figures and HTML reports.
"""
