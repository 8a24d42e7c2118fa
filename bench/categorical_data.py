"""A synthetic, categorical-heavy binary dataset: the shape of issue 10's slow training.

140k rows (by default) of 15 categorical columns of realistic cardinalities (three with 2-10
values, nine with 20-100, three with 500-5000, Zipf-skewed so a few values are common and many
rare), three numeric columns and a binary target that depends on single categories, on two
pairwise interactions and on the numerics. Single-category effects make CatBoost's CTRs matter;
the interactions are what its feature combinations could find, so a cheaper CTR setting has
something to lose and the benchmark can see it.

Deterministic: the same ``rows`` and ``seed`` give the same frame. Importable by tests
(``from bench.categorical_data import categorical_frame``), which use small ``rows``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

CARDINALITIES: dict[str, int] = {
    "channel": 3,
    "device": 5,
    "segment": 8,
    "region": 25,
    "plan": 30,
    "brand": 40,
    "category": 50,
    "campaign": 60,
    "source": 70,
    "model": 80,
    "branch": 90,
    "product": 100,
    "city": 600,
    "merchant": 2000,
    "postcode": 5000,
}
"""The categorical columns and how many distinct values each can take."""

NUMERIC = ("amount", "age_days", "score")
TARGET = "label"
EVENT_TIME = "event_time"
INTERACTIONS = (("segment", "region"), ("device", "campaign"))
"""Pairs whose joint value carries signal that neither column carries alone."""
MAIN_EFFECTS: dict[str, float] = {
    "channel": 0.4,
    "segment": 0.5,
    "plan": 0.4,
    "category": 0.5,
    "product": 0.4,
    "city": 0.5,
    "merchant": 0.7,
    "postcode": 0.4,
}
"""The columns with an effect of their own, and its spread (standard deviation, in logits)."""


def _zipf_codes(rng: np.random.Generator, rows: int, cardinality: int) -> np.ndarray:
    """Value codes 0..cardinality-1 with Zipf-like frequencies (a long tail of rare values)."""
    weights = 1.0 / np.arange(1, cardinality + 1) ** 1.1
    return rng.choice(cardinality, size=rows, p=weights / weights.sum())


def categorical_frame(rows: int = 140_000, seed: int = 0) -> pl.DataFrame:
    """The dataset: ``event_time`` (one row a minute), the 15 categoricals (strings), the
    numerics and ``label`` (0/1, about a fifth positive)."""
    # The effects come from their own generator, so they are the same whatever ``rows``:
    # a small sample (a test's) and the full benchmark share one underlying structure.
    effects_rng = np.random.default_rng([seed, 1])
    main_effects = {
        column: effects_rng.normal(scale=scale, size=CARDINALITIES[column])
        for column, scale in MAIN_EFFECTS.items()
    }
    pair_effects = [
        effects_rng.normal(scale=0.8, size=CARDINALITIES[a] * CARDINALITIES[b])
        for a, b in INTERACTIONS
    ]
    rng = np.random.default_rng([seed, 0])
    codes = {c: _zipf_codes(rng, rows, k) for c, k in CARDINALITIES.items()}
    logit = np.full(rows, -1.4)
    # Single-category effects: a fixed random effect per value, stronger for some columns.
    for column, effect in main_effects.items():
        logit += effect[codes[column]]
    # Interactions: an effect per (a, b) pair, independent of a's and b's own effects.
    for (a, b), effect in zip(INTERACTIONS, pair_effects, strict=True):
        logit += effect[codes[a] * CARDINALITIES[b] + codes[b]]
    amount = rng.lognormal(mean=4.0, sigma=1.0, size=rows)
    age_days = rng.integers(0, 3650, size=rows).astype(float)
    score = rng.normal(size=rows)
    logit += 0.3 * (np.log(amount) - 4.0) + 0.5 * score - 0.0001 * age_days
    label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return pl.DataFrame(
        {
            EVENT_TIME: pl.datetime_range(
                start,
                start + dt.timedelta(minutes=rows - 1),
                interval="1m",
                eager=True,
                time_zone="UTC",
            ),
            **{c: np.char.add(f"{c[:3]}_", codes[c].astype(str)) for c in CARDINALITIES},
            "amount": amount,
            "age_days": age_days,
            "score": score,
            TARGET: label,
        }
    )


def features() -> list[str]:
    """The feature columns, categoricals first."""
    return [*CARDINALITIES, *NUMERIC]
