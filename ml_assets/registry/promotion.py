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


@dataclass
class GateResult:
    """The gate's decision for a challenger, with what it was compared against."""

    decision: GateDecision
    champion_version: str | None
    numbers: dict[str, Any]

    @property
    def verdict(self) -> str:
        return "promote" if self.decision.promote else "reject"

    @property
    def summary(self) -> str:
        return f"Promotion gate: {self.verdict.upper()}: {self.decision.reason}"

    def check_result(self, check_name: str) -> Any:
        """The gate as a Dagster asset check result (blocking: a reject stops the champion)."""
        import dagster as dg

        numbers = {k: v for k, v in self.numbers.items() if isinstance(v, int | float | str)}
        regressions = dg.MetadataValue.json(self.decision.slice_regressions)
        return dg.AssetCheckResult(
            check_name=check_name,
            passed=self.decision.promote,
            description=self.decision.reason,
            metadata={**numbers, "slice_regressions_list": regressions},
        )


def run_gate(tracking: Any, name: str, trained: Any, config: Any) -> GateResult:
    """Score the challenger and the current champion on the challenger's held-out rows and
    decide (:func:`decide`). ``tracking`` is the MLflow resource, ``trained`` a
    :class:`~ml_assets.train.training.TrainedModel`, ``config`` its ``TrainConfig``.

    A champion that needs features the held-out rows lack cannot be scored on them: the
    challenger is then judged against the baseline, and the reason says so.
    """
    from ml_assets.registry.tracking import CHAMPION
    from ml_assets.train import core

    split, ev, problem = trained.split, trained.evaluation, trained.problem
    kind = problem.kind
    champion_version = tracking.alias_version(name, CHAMPION)
    champion_metrics = champion_slices = None
    note = ""
    if champion_version is not None:
        tag = tracking.version_tags(name, champion_version).get("problem")
        champ_problem = core.Problem.from_json(tag) if tag else problem
        missing = [f for f in champ_problem.features if f not in split.test.columns]
        if missing:
            note = f" (champion v{champion_version} needs features {missing}: compared to baseline)"
            champion_version = None
        else:
            champ_model = tracking.load_model(name, champion_version)
            champ_scores = core.predict(champ_model, split.test, champ_problem)
            champion_metrics = core.metrics_for(ev.y, champ_scores, problem)
            champion_slices = core.slice_metrics(
                split.test, ev.y, champ_scores, problem, config.min_slice_rows
            )
    decision = decide(
        metric=kind.primary_metric,
        higher_better=kind.higher_is_better,
        challenger=ev.metrics,
        baseline=ev.baseline,
        champion=champion_metrics,
        challenger_slices=ev.slices,
        champion_slices=champion_slices,
        tolerance=config.tolerance,
        slice_tolerance=config.slice_tolerance,
    )
    decision.reason += note
    numbers = {
        **decision.numbers,
        "champion_version": champion_version or "none",
        "held_out_from": str(split.boundaries[1]),
        "held_out_rows": split.test.height,
    }
    return GateResult(decision, champion_version, numbers)
