"""The detector: the estimator, its parts, their fitting, calibration and model files."""
