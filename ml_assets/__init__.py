"""ml_assets: an asset-based data and ML platform on Dagster, polars, pandera, MLflow and BentoML."""

__version__ = "0.1.0"
