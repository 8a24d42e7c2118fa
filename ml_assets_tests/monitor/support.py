"""Real fixtures for the monitoring tests and bench: NannyML's demo data, a CatBoost champion
trained with the platform's own training core, its scored test window (the reference) and its
scored later rows (what is monitored). No mocks."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

import polars as pl

from ml_assets.monitor.suite import MonitoredModel
from ml_assets.train import core
from ml_assets.train.config import TrainConfig


@dataclass(frozen=True)
class Scored:
    """A champion and its scored frames (features, event time, predictions, label)."""

    model: MonitoredModel
    reference: pl.DataFrame
    analysis: pl.DataFrame
    test_metrics: dict[str, float]
    estimator: Any
    problem: core.Problem

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        """``rows`` with the champion's prediction columns added."""
        kind, classes = self.problem.kind, self.problem.classes
        scores = core.predict(self.estimator, rows, self.problem)
        outputs = kind.output_columns(scores, kind.labels(scores, classes), classes)
        return pl.concat([rows, pl.DataFrame(outputs)], how="horizontal")


def demo_rows(dataset: str) -> tuple[pl.DataFrame, Any]:
    """The contract's entity rows joined with their labels (UTC event times), and the contract."""
    from ml_assets.contracts import load_contracts
    from ml_assets.ingest.demo import demo_frames

    contract = load_contracts()[dataset]
    frames = demo_frames(contract)
    key = contract.entity.primary_key
    labels = frames["labels"].select(*contract.labels.key_columns, contract.target)
    labels = labels.rename(dict(zip(contract.labels.key_columns, key, strict=True)))
    frame = frames["entity"].join(labels, on=key, how="left")
    event_time = contract.entity.event_time
    return frame.with_columns(pl.col(event_time).dt.replace_time_zone("UTC")), contract


@functools.cache
def champion(dataset: str, iterations: int = 150, test_share: float = 0.15) -> Scored:
    """Train on the first half of the demo's time range; the test window is the reference; the
    second half, scored by the model, is what gets monitored."""
    frame, contract = demo_rows(dataset)
    event_time = contract.entity.event_time
    features = [
        c for c in contract.entity.columns if c not in (*contract.entity.primary_key, event_time)
    ]
    times = frame.get_column(event_time)
    middle = times.min() + (times.max() - times.min()) / 2
    first = frame.filter(pl.col(event_time) < middle)
    second = frame.filter(pl.col(event_time) >= middle)
    problem = core.Problem.from_frame(
        first, contract.problem_type, contract.target, features, event_time
    )
    split = core.time_split(first, event_time, test_share=test_share)
    model = core.fit(split, problem, TrainConfig(iterations=iterations))
    evaluation = core.evaluate(model, split, problem)
    unscored = Scored(
        MonitoredModel.from_problem(problem), split.test, second, evaluation.metrics, model, problem
    )
    return Scored(
        unscored.model,
        unscored.score(split.test),
        unscored.score(second),
        evaluation.metrics,
        model,
        problem,
    )


def month_bounds(month: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    nxt = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return month, nxt
