"""Experiment tracking and the model registry (MLflow), and the promotion gate."""
