"""A dataset, built once per contract: what every stage's builder is handed.

:class:`Dataset` holds the contract, its feature spec (the features YAML parsed once), its
problem kind, its time partitions, and every asset key and job name of the dataset, so no stage
builds a key or parses a file of its own. :func:`load_datasets` builds them from the contracts
folder in effect (:mod:`ml_assets.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg

from ml_assets.contracts.model import Contract, Table, load_contracts
from ml_assets.features.spec import FeatureSpec, load_feature_spec
from ml_assets.partitions import Partitions
from ml_assets.problems import ProblemKind, problem_kind

POOLS: dict[str, frozenset[str]] = {
    "ml_assets/ingest": frozenset({"raw", "validated", "features"}),
    "ml_assets/train": frozenset(
        {"training_set", "online", "model", "model_search", "champion", "reference"}
    ),
    "ml_assets/serve": frozenset({"serving"}),
    "ml_assets/score": frozenset({"predictions"}),
    "ml_assets/monitor": frozenset({"monitoring"}),
}
"""Concurrency pools by the stages of :meth:`Dataset.asset_args`: the kinds of work whose steps
compete for the same executors (a step of each waits for a free slot of its pool, across runs)."""


@dataclass(frozen=True)
class DatasetKeys:
    """Every asset key of one dataset."""

    raw: dict[str, dg.AssetKey]
    """By table role (``entity``, ``labels``)."""
    validated: dict[str, dg.AssetKey]
    quarantine: dict[str, dg.AssetKey]
    features: dg.AssetKey
    training_set: dg.AssetKey
    online: dg.AssetKey
    model: dg.AssetKey
    model_search: dg.AssetKey
    """The hyperparameter search's best config (its own job, never the train job's)."""
    champion: dg.AssetKey
    predictions: dg.AssetKey
    bento: dg.AssetKey
    prediction_log: dg.AssetKey
    """External: what the served Bento logs (written by ``bentoml serve``, not by Dagster)."""
    monitoring: dg.AssetKey
    """Partitioned: the tidy monitoring results (:data:`ml_assets.monitor.schema.RESULTS_SCHEMA`)."""
    monitoring_summary: dg.AssetKey
    """Every monitoring partition over time: one row per partition, and the summary figure."""
    reference: dg.AssetKey
    """The champion's monitoring reference."""

    @classmethod
    def of(cls, name: str, roles: list[str]) -> DatasetKeys:
        def key(asset: str) -> dg.AssetKey:
            return dg.AssetKey([name, asset])

        return cls(
            raw={r: key(f"raw_{r}") for r in roles},
            validated={r: key(f"validated_{r}") for r in roles},
            quarantine={r: key(f"quarantine_{r}") for r in roles},
            features=key("features"),
            training_set=key("training_set"),
            online=key("online_features"),
            model=key("model"),
            model_search=key("model_search"),
            champion=key("champion"),
            predictions=key("predictions"),
            bento=key("bento"),
            prediction_log=key("prediction_log"),
            monitoring=key("monitoring"),
            monitoring_summary=key("monitoring_summary"),
            reference=key("reference"),
        )


@dataclass(frozen=True)
class DatasetJobs:
    """The dataset's job names, in pipeline order."""

    pipeline: str
    """Partitioned: SQL to validated data and the feature table."""
    train: str
    """Training set, online store, model, champion, Bento."""
    score: str
    """Partitioned batch predictions by the champion."""
    monitor: str
    """Partitioned NannyML monitoring (one run per partition: its checks are per partition)."""
    monitoring_summary: str
    """The monitoring summary over every monitored partition (unpartitioned)."""
    search: str
    """The model search (unpartitioned, opt-in: not part of :meth:`in_order`)."""

    def in_order(self) -> list[str]:
        """The jobs a dataset runs end to end (monitoring runs per partition, separately)."""
        return [self.pipeline, self.train, self.score]


@dataclass(frozen=True)
class Dataset:
    """One contract and everything derived from it that more than one stage needs."""

    contract: Contract
    spec: FeatureSpec

    @classmethod
    def build(cls, contract: Contract, features_dir: str | Path | None = None) -> Dataset:
        return cls(contract, load_feature_spec(contract, directory=features_dir))

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def tables(self) -> dict[str, Table]:
        return self.contract.tables

    @cached_property
    def kind(self) -> ProblemKind:
        return problem_kind(self.contract.problem_type)

    @cached_property
    def partitions(self) -> Partitions:
        return Partitions(self.contract.partitioning)

    @cached_property
    def keys(self) -> DatasetKeys:
        return DatasetKeys.of(self.name, list(self.tables))

    @cached_property
    def jobs(self) -> DatasetJobs:
        n = self.name
        return DatasetJobs(
            f"{n}_pipeline",
            f"{n}_train",
            f"{n}_score",
            f"{n}_monitor",
            f"{n}_monitoring_summary",
            f"{n}_model_search",
        )

    @property
    def owners(self) -> list[str] | None:
        """Dagster asset owners: the contract's owner when it is an email address."""
        return [self.contract.owner] if "@" in self.contract.owner else None

    def tags(self, stage: str) -> dict[str, str]:
        """The tags every asset of the dataset carries."""
        return {"stage": stage, "dataset": self.name}

    def run_tags(self, stage: str) -> dict[str, str]:
        """The tags of the dataset's jobs' runs: what the production instance's queued run
        coordinator limits concurrency by (``deploy/production/dagster.yaml``)."""
        return {"ml_assets/dataset": self.name, "ml_assets/stage": stage}

    @staticmethod
    def pool(stage: str) -> str:
        """The Dagster concurrency pool of an asset of ``stage``: one per kind of work (see
        :data:`POOLS`), shared by every dataset, whose limits the production instance sets
        (``ML_ASSETS_POOL_LIMITS``) so an ingestion backfill leaves a worker to training."""
        for pool, stages in POOLS.items():
            if stage in stages:
                return pool
        raise ValueError(f"no pool for the stage {stage!r} (known: {sorted(POOLS)})")

    def asset_args(self, stage: str, *, executed: bool = True) -> dict[str, Any]:
        """What every asset of the dataset declares: its group (the dataset, one per lineage
        graph in the UI), owners, the stage tags and, for an asset Dagster executes (not an
        ``AssetSpec`` of something written elsewhere), the stage's concurrency pool."""
        args = {"group_name": self.name, "owners": self.owners, "tags": self.tags(stage)}
        return {**args, "pool": self.pool(stage)} if executed else args


def load_datasets(
    contracts_dir: str | Path | None = None, features_dir: str | Path | None = None
) -> dict[str, Dataset]:
    """Every dataset of a contracts folder (default: the one in :mod:`ml_assets.settings`)."""
    if contracts_dir is None:
        from ml_assets import settings

        contracts_dir = settings.current().contracts_path
    return {
        name: Dataset.build(contract, features_dir)
        for name, contract in load_contracts(contracts_dir).items()
    }
