"""Data contracts: YAML declarations of datasets, their loading, and diffs between versions."""

from ml_assets.contracts.diff import Change, diff_contracts
from ml_assets.contracts.model import (
    BUNDLED_DIR,
    Column,
    ColumnType,
    Contract,
    ContractError,
    Granularity,
    ProblemType,
    StoredAs,
    Table,
    load_contract,
    load_contracts,
    parse_contract,
)

__all__ = [
    "BUNDLED_DIR",
    "Change",
    "Column",
    "ColumnType",
    "Contract",
    "ContractError",
    "Granularity",
    "ProblemType",
    "StoredAs",
    "Table",
    "diff_contracts",
    "load_contract",
    "load_contracts",
    "parse_contract",
]
