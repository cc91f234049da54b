"""Running a model bundle: its card, the shipped models, engines, the predictor."""
