"""A yearly-survey dataset: every event on one date per year, for tests of training windows.

Five waves (15 January 2019 .. 2023) of :data:`ROWS_PER_WAVE` answers each, every label
observed 35 days after its answer, monthly partitions from 2019-01 to 2024-02. The default
cutoff (the end of the last partition, 2024-03-01) has no event in the 365 days before it: the
old fixed window held no row, although every label is known by then.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from ml_assets.contracts import Contract, parse_contract
from ml_assets.dataset import Dataset
from ml_assets.features.compute import compute_features
from ml_assets.features.offline import validated_schema
from ml_assets.storage import Lake

WAVES = [dt.datetime(year, 1, 15, 9, 0) for year in range(2019, 2024)]
ROWS_PER_WAVE = 120
LABEL_DELAY = dt.timedelta(days=35)
CUTOFF = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
"""The default cutoff: the end of the last monthly partition."""
FIRST_KEY, LAST_KEY = "2019-01-01", "2024-02-01"

CONTRACT = """\
name: survey
version: 1.0.0
owner: tests@example.com
problem_type: binary
target: renewed
source: {url_env: ML_ASSETS_SOURCE_URL}
partitioning: {granularity: monthly, start: "2019-01-01", end: "2024-03-01"}
entity:
  table: survey_answers
  primary_key: [id]
  event_time: answered_at
  columns:
    id: {type: int}
    answered_at: {type: datetime}
    satisfaction: {type: float, min: 0, max: 10}
    plan: {type: category, allowed: [basic, plus, pro]}
labels:
  table: survey_outcomes
  key: [id]
  observed_at: observed_at
  columns:
    id: {type: int}
    observed_at: {type: datetime}
    renewed: {type: int, allowed: [0, 1]}
"""


def contract_text(training: str = "") -> str:
    """The contract's YAML, with an optional ``training:`` block (e.g. ``{window_days: 1000}``)."""
    return CONTRACT + (f"training: {training}\n" if training else "")


def contract(training: str = "") -> Contract:
    return parse_contract(contract_text(training), "survey.yaml")


def write_contract(folder: Path, training: str = "") -> Path:
    """The contract as ``folder/survey.yaml`` (a contracts folder of its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "survey.yaml"
    path.write_text(contract_text(training), encoding="utf-8")
    return path


def records() -> tuple[list[dict], list[dict]]:
    """The answers and their outcomes (naive UTC times), the same on every call."""
    rng = random.Random(11)
    rows, labels = [], []
    for wave, when in enumerate(WAVES):
        for i in range(ROWS_PER_WAVE):
            key = wave * ROWS_PER_WAVE + i
            score = rng.uniform(0, 10)
            at = when + dt.timedelta(minutes=i)
            plan = rng.choice(["basic", "plus", "pro"])
            rows.append({"id": key, "answered_at": at, "satisfaction": score, "plan": plan})
            renewed = int(score + rng.gauss(0, 1.5) > 5)
            labels.append({"id": key, "observed_at": at + LABEL_DELAY, "renewed": renewed})
    return rows, labels


def seed(url: str) -> int:
    """Create and fill the two source tables; return the number of answers."""
    md = sa.MetaData()
    answers = sa.Table(
        "survey_answers",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("answered_at", sa.DateTime, nullable=False),
        sa.Column("satisfaction", sa.Float, nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
    )
    outcomes = sa.Table(
        "survey_outcomes",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("observed_at", sa.DateTime, nullable=False),
        sa.Column("renewed", sa.Integer, nullable=False),
    )
    rows, labels = records()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
        conn.execute(answers.insert(), rows)
        conn.execute(outcomes.insert(), labels)
    engine.dispose()
    return len(rows)


def write_lake(dataset: Dataset, lake: Lake, upto: str = LAST_KEY) -> None:
    """What the pipeline job leaves in the lake, written directly (no Dagster run): validated
    labels and the feature table, every partition up to ``upto`` (empty ones too)."""
    rows, labels = records()
    utc = pl.Datetime("us", "UTC")
    entity = pl.DataFrame(rows).with_columns(pl.col("answered_at").cast(utc))
    outcomes = pl.DataFrame(labels).with_columns(pl.col("observed_at").cast(utc))
    features = compute_features(dataset.spec, dataset_rows(dataset, entity))
    keys = dataset.partitions.keys()
    for key in keys[: keys.index(upto) + 1]:
        lo, hi = dataset.partitions.utc_window(key)
        t, o = pl.col("answered_at"), pl.col("observed_at")
        lake.write(dataset.keys.features, key, features.filter(t >= lo, t < hi))
        lake.write(dataset.keys.validated["labels"], key, outcomes.filter(o >= lo, o < hi))


def dataset_rows(dataset: Dataset, entity: pl.DataFrame) -> pl.DataFrame:
    """Entity rows typed as the validated table holds them."""
    schema = validated_schema(dataset, "entity")
    return entity.select([pl.col(c).cast(t) for c, t in schema.items()])
