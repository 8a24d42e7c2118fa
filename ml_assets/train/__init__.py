"""Training: time-based splits, CatBoost, evaluation and plots; the model assets."""
