"""Helpers for tests that run the generated Dagster assets against real databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ml_assets.contracts import Contract
from ml_assets.dataset import Dataset
from ml_assets.ingest.assets import SqlSource, build_raw_asset
from ml_assets.storage import LAKE_IO, Lake, LakeIOManager
from ml_assets.validate.assets import build_validated_assets


def ingest_assets(contract: Contract, roles: tuple[str, ...] = ("entity", "labels")) -> list:
    dataset = Dataset.build(contract)
    out: list = []
    for role in roles:
        out += [build_raw_asset(dataset, role), build_validated_assets(dataset, role)]
    return out


def resources(lake_dir: Path, source_url: str, chunk_rows: int = 100_000) -> dict[str, Any]:
    lake = Lake(base_path=str(lake_dir))
    return {
        "lake": lake,
        LAKE_IO: LakeIOManager(lake=lake),
        "source": SqlSource(url=source_url, chunk_rows=chunk_rows),
    }


def range_tags(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def run_range(
    contract: Contract,
    lake_dir: Path,
    source_url: str,
    first: str | None = None,
    last: str | None = None,
    roles: tuple[str, ...] = ("entity", "labels"),
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    chunk_rows: int = 100_000,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize raw + validated for a partition range as one run (a single-run backfill)."""
    keys = Dataset.build(contract).partitions.definition.get_partition_keys()
    return dg.materialize(
        ingest_assets(contract, roles),
        resources=resources(lake_dir, source_url, chunk_rows),
        instance=instance,
        tags=range_tags(first or keys[0], last or keys[-1]),
        raise_on_error=raise_on_error,
        run_config=run_config,
    )


def read(lake_dir: Path, key: dg.AssetKey, partitions: list[str] | None = None) -> pl.DataFrame:
    lake = Lake(base_path=str(lake_dir))
    folder = lake.path(key, None).parent
    if partitions is None:
        partitions = sorted(
            p.name.removesuffix(".parquet") for p in Path(str(folder)).glob("*.parquet")
        )
    return lake.scan(key, partitions).collect()


def counts(lake_dir: Path, contract: Contract, role: str) -> tuple[int, int]:
    """(valid rows, quarantined rows) across every stored partition."""
    return (
        read(lake_dir, Dataset.build(contract).keys.validated[role]).height,
        read(lake_dir, Dataset.build(contract).keys.quarantine[role]).height,
    )


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """Check evaluations of a run by ``asset/key:check_name``."""
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }
