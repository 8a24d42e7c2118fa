"""Monitoring: NannyML drift and performance over served and batch predictions, alerts, retrains.

The results of every monitoring calculator are one tidy table (:data:`~.schema.RESULTS_SCHEMA`):
a row per partition, calculator, column, method and metric, with NannyML's thresholds and
alert flag. Everything downstream (checks, alert sinks, the retrain sensor, plots) reads it.
"""
