"""The promotion gate: is the challenger good enough to become the champion?"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl


@dataclass
class GateDecision:
    promote: bool
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    slice_regressions: list[str] = field(default_factory=list)


def _worse_by(new: float, old: float, higher_better: bool) -> float:
    """How much worse ``new`` is than ``old``, relative to ``old`` (negative: better)."""
    if old == 0 or math.isnan(old):
        return 0.0 if new == old else (math.inf if (new < old) == higher_better else -math.inf)
    delta = (old - new) if higher_better else (new - old)
    return delta / abs(old)


def decide(
    *,
    metric: str,
    higher_better: bool,
    challenger: dict[str, float],
    baseline: dict[str, float],
    champion: dict[str, float] | None,
    challenger_slices: pl.DataFrame,
    champion_slices: pl.DataFrame | None,
    tolerance: float = 0.01,
    slice_tolerance: float = 0.05,
) -> GateDecision:
    """Promote when the challenger is not worse than the champion beyond ``tolerance`` (relative)
    on the primary metric and no slice is worse beyond ``slice_tolerance``; with no champion yet,
    promote only a challenger that beats the naive baseline.
    """
    chal = challenger[metric]
    numbers: dict[str, Any] = {
        "metric": metric,
        "challenger": round(chal, 6),
        "baseline": round(baseline[metric], 6),
        "tolerance": tolerance,
        "slice_tolerance": slice_tolerance,
    }
    if math.isnan(chal):
        return GateDecision(
            False, f"challenger {metric} is undefined on the held-out rows", numbers
        )
    if champion is None:
        beats = chal > baseline[metric] if higher_better else chal < baseline[metric]
        reason = (
            f"first model: {metric} {chal:.4f} {'beats' if beats else 'does not beat'} "
            f"the naive baseline {baseline[metric]:.4f}"
        )
        return GateDecision(beats, reason, numbers)

    champ = champion[metric]
    numbers["champion"] = round(champ, 6)
    worse = _worse_by(chal, champ, higher_better)
    numbers["relative_change"] = round(-worse, 6)
    regressions: list[str] = []
    if champion_slices is not None and champion_slices.height and challenger_slices.height:
        joined = challenger_slices.join(
            champion_slices.select("column", "value", pl.col(metric).alias("champion")),
            on=["column", "value"],
        )
        for row in joined.iter_rows(named=True):
            w = _worse_by(row[metric], row["champion"], higher_better)
            if w > slice_tolerance:
                regressions.append(
                    f"{row['column']}={row['value']}: {row[metric]:.4f} vs {row['champion']:.4f}"
                )
    numbers["slice_regressions"] = len(regressions)
    if worse > tolerance:
        return GateDecision(
            False,
            f"{metric} {chal:.4f} is worse than the champion's {champ:.4f} beyond {tolerance:.1%}",
            numbers,
            regressions,
        )
    if regressions:
        return GateDecision(
            False,
            f"{len(regressions)} slice(s) degrade beyond {slice_tolerance:.0%}: {regressions[0]}",
            numbers,
            regressions,
        )
    return GateDecision(
        True,
        f"{metric} {chal:.4f} vs champion {champ:.4f}: within {tolerance:.1%} or better, no slice degrades",
        numbers,
    )
