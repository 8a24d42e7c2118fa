"""Compare two versions of a contract and say which changes break consumers."""

from __future__ import annotations

from dataclasses import dataclass

from ml_assets.contracts.model import TYPE_WIDTH, Column, Contract


@dataclass(frozen=True)
class Change:
    """One difference between two contract versions."""

    breaking: bool
    where: str
    what: str

    def __str__(self) -> str:
        return f"{'BREAKING' if self.breaking else 'compatible'}  {self.where}: {self.what}"


def _column_changes(where: str, old: Column, new: Column) -> list[Change]:
    out: list[Change] = []
    if old.type != new.type:
        old_kind, old_rank = TYPE_WIDTH[old.type]
        new_kind, new_rank = TYPE_WIDTH[new.type]
        narrowed = old_kind != new_kind or new_rank < old_rank
        out.append(Change(narrowed, where, f"type {old.type.value} -> {new.type.value}"))
    if old.nullable and not new.nullable:
        out.append(Change(True, where, "no longer nullable"))
    elif new.nullable and not old.nullable:
        out.append(Change(False, where, "now nullable"))
    for bound, tighter in (("min", lambda o, n: n > o), ("max", lambda o, n: n < o)):
        o, n = getattr(old, bound), getattr(new, bound)
        if o == n:
            continue
        if n is not None and (o is None or tighter(o, n)):
            out.append(Change(True, where, f"{bound} tightened {o} -> {n}"))
        else:
            out.append(Change(False, where, f"{bound} relaxed {o} -> {n}"))
    if old.allowed != new.allowed:
        if new.allowed is None:
            out.append(Change(False, where, "allowed values no longer restricted"))
        else:
            removed = [v for v in (old.allowed or []) if v not in new.allowed]
            added = [v for v in new.allowed if v not in (old.allowed or [])]
            if old.allowed is None or removed:
                out.append(
                    Change(True, where, f"allowed values removed: {removed or 'restricted'}")
                )
            if added:
                out.append(Change(False, where, f"allowed values added: {added}"))
    if old.pii != new.pii:
        out.append(Change(False, where, f"pii {old.pii} -> {new.pii}"))
    return out


def _window(c: Contract) -> str:
    days = c.training.window_days if c.training else None
    return "every row before the cutoff" if days is None else f"{days:g} days"


def diff_contracts(old: Contract, new: Contract) -> list[Change]:
    """List the changes from ``old`` to ``new``; breaking ones first.

    Breaking: a removed column, a narrowed type, a tightened range or allowed set, a column
    that stops being nullable, a changed key, time column, target or problem type.
    """
    changes: list[Change] = []
    for role in ("entity", "labels"):
        o, n = old.tables[role], new.tables[role]
        if o.key != n.key:
            changes.append(Change(True, f"{role}.key", f"{o.key} -> {n.key}"))
        if o.time_column != n.time_column:
            changes.append(Change(True, f"{role}.time", f"{o.time_column} -> {n.time_column}"))
        if (o.table, o.query) != (n.table, n.query):
            changes.append(Change(False, f"{role}.source", "table or query changed"))
        for col in o.columns:
            if col not in n.columns:
                changes.append(Change(True, f"{role}.{col}", "column removed"))
            else:
                changes.extend(_column_changes(f"{role}.{col}", o.columns[col], n.columns[col]))
        for col in n.columns:
            if col not in o.columns:
                nullable = n.columns[col].nullable
                changes.append(
                    Change(
                        not nullable,
                        f"{role}.{col}",
                        "column added" + ("" if nullable else " (not nullable)"),
                    )
                )
    if old.target != new.target:
        changes.append(Change(True, "target", f"{old.target} -> {new.target}"))
    if old.problem_type != new.problem_type:
        changes.append(
            Change(True, "problem_type", f"{old.problem_type.value} -> {new.problem_type.value}")
        )
    if old.training != new.training:
        what = f"{_window(old)} -> {_window(new)}"
        changes.append(Change(False, "training.window_days", what))
    if old.partitioning != new.partitioning:
        changes.append(Change(True, "partitioning", "partitioning changed (partitions re-key)"))
    return sorted(changes, key=lambda c: not c.breaking)
