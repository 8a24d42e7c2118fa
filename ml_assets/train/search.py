"""The model search (issue 13): a budgeted, seeded, resumable hyperparameter search of CatBoost.

Plain functions, no Dagster: :func:`check_search_config` refuses a setting that cannot work
(naming it) before anything is tracked, :func:`time_folds` cuts expanding-window folds over the
training set's event time, :func:`run_search` runs an Optuna study (TPE sampler, median pruner
fed the early-stopping loss during each fit and every fold's score) stored as SQLite under ``$ML_ASSETS_HOME/search``, so a killed search
resumes without repeating finished trials, and tracks it by the standard through
:class:`~ml_assets.registry.tracking.SearchTracking` when given one.

Every trial, and the default training config, is scored on the same folds with the problem
kind's primary metric and direction (:mod:`ml_assets.problems`). The result, a versioned JSON
config, feeds training only when a ``TrainConfig`` opts in (``params_from``).

Optuna, CatBoost and MLflow are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ml_assets import settings
from ml_assets.train import core
from ml_assets.train.config import FAMILIES, SearchConfig, TrainConfig

log = logging.getLogger(__name__)

LOG_RANGES = ("learning_rate", "l2_leaf_reg", "random_strength")
"""Ranges sampled on a log scale (their low end must be above zero)."""
INT_RANGES = ("depth", "one_hot_max_size", "border_count")
SEARCHED = ("depth", "learning_rate", "l2_leaf_reg", "one_hot_max_size", "border_count",
            "random_strength")  # fmt: skip
"""The TrainConfig fields a search sets (and a training that opts in takes from its result)."""
LIMITS: dict[str, tuple[float, float]] = {
    "depth": (1, 16),
    "one_hot_max_size": (1, 255),
    "border_count": (1, 65535),
}
"""CatBoost's own bounds of the integer ranges."""
EARLY_STOPPING_SHARE = 0.15
"""The newest share of a fold's training rows that early stopping watches (never scored)."""
MIN_FOLD_ROWS = 20
"""Fewest rows of any part of a fold (fit, early-stopping, validation rows)."""
RESULT_FORMAT = 1
"""The version of the best-config JSON's layout."""


class SearchError(ValueError):
    """A search setting (or training set) that cannot give a search; the message names it."""


# --- checking the settings ------------------------------------------------------------------


def cores() -> int:
    """The cores trials may use (the process's CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_search_config(config: SearchConfig, rows: int | None = None) -> None:
    """Refuse, with a :class:`SearchError` naming the setting, anything that cannot work:
    no trials, no time, an empty or inverted range (or one outside CatBoost's bounds, or a log
    range reaching zero), parallel trials beyond the cores, an unknown model family, fewer than
    two folds, or (given ``rows``) a training set too small for the folds."""
    if config.n_trials < 1:
        raise SearchError(f"n_trials must be at least 1, got {config.n_trials}")
    if not (config.timeout_s > 0 and math.isfinite(config.timeout_s)):
        raise SearchError(f"timeout_s must be a positive number of seconds, got {config.timeout_s}")
    if config.model_family not in FAMILIES:
        raise SearchError(
            f"model_family {config.model_family!r} is unknown; known: {', '.join(FAMILIES)}"
        )
    if config.folds < 2:
        raise SearchError(f"folds must be at least 2, got {config.folds}")
    if config.parallel < 1:
        raise SearchError(f"parallel must be at least 1, got {config.parallel}")
    if config.parallel > cores():
        raise SearchError(
            f"parallel = {config.parallel} trials at once would oversubscribe the {cores()} "
            "cores (each trial's model needs at least one thread)"
        )
    if config.iterations is not None and config.iterations < 1:
        raise SearchError(f"iterations must be at least 1, got {config.iterations}")
    for name in SEARCHED:
        bounds = getattr(config, name)
        if len(bounds) != 2:
            raise SearchError(
                f"{name} must be a range [low, high], got {bounds!r}"
                + (" (empty)" if not bounds else "")
            )
        low, high = bounds
        if not (math.isfinite(low) and math.isfinite(high)):
            raise SearchError(f"{name} range {bounds!r} must be finite")
        if low > high:
            raise SearchError(f"{name} range {bounds!r} is inverted: low {low} > high {high}")
        if name in LOG_RANGES and low <= 0:
            raise SearchError(
                f"{name} range {bounds!r} is searched on a log scale: low must be > 0"
            )
        if name in LIMITS and not (LIMITS[name][0] <= low and high <= LIMITS[name][1]):
            raise SearchError(f"{name} range {bounds!r} is outside CatBoost's {list(LIMITS[name])}")
    if rows is not None:
        need = (config.folds + 1) * MIN_FOLD_ROWS * 2
        if rows < need:
            raise SearchError(
                f"folds = {config.folds} needs at least {need} training rows "
                f"({MIN_FOLD_ROWS * 2} per block of folds + 1 blocks), the training set has {rows}"
            )


# --- folds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """Row indices (into the training frame) of one expanding-window fold."""

    train: np.ndarray
    """Every row older than the validation rows, oldest first."""
    valid: np.ndarray


def time_folds(event_times: pl.Series | np.ndarray | Sequence[Any], folds: int) -> list[Fold]:
    """``folds`` expanding-window folds: the rows, ordered by event time, are cut into
    ``folds + 1`` blocks; fold k trains on blocks 0..k and validates on block k + 1. Block
    boundaries are timestamps, so rows sharing one never straddle train and validation: no
    training row is later than (or as late as) its fold's validation rows."""
    times = pl.Series("t", event_times) if not isinstance(event_times, pl.Series) else event_times
    n = times.len()
    if folds < 2:
        raise SearchError(f"folds must be at least 2, got {folds}")
    if n == 0:
        raise SearchError("the training set is empty: no folds")
    if times.null_count():
        raise SearchError(f"the event time has {times.null_count()} null values: no folds")
    physical = times.to_physical().to_numpy()
    order = np.argsort(physical, kind="stable").astype(np.int64)
    values = physical[order]
    edges = [values[min(n - 1, (n * k) // (folds + 1))] for k in range(1, folds + 1)]
    starts = [int(np.searchsorted(values, e, side="left")) for e in edges] + [n]
    out = []
    for k in range(folds):
        train, valid = order[: starts[k]], order[starts[k] : starts[k + 1]]
        if train.size == 0 or valid.size == 0:
            raise SearchError(
                f"folds = {folds}: fold {k + 1} has {train.size} training and {valid.size} "
                f"validation rows ({n} rows; many share an event time): use fewer folds"
            )
        out.append(Fold(train, valid))
    return out


def _early_stopping_cut(times: np.ndarray) -> int:
    """Where a fold's (time-ordered) training rows split into fit and early-stopping rows: at a
    timestamp, so the early-stopping rows are strictly newer than the fitted ones."""
    n = times.size
    cut = int(np.searchsorted(times, times[min(n - 1, int(n * (1 - EARLY_STOPPING_SHARE)))]))
    return cut if 0 < cut < n else max(1, n - max(1, int(n * EARLY_STOPPING_SHARE)))


# --- the data every trial uses --------------------------------------------------------------


@dataclass
class FoldPools:
    """One fold's CatBoost pools, built once and shared by every trial."""

    fit: Any
    early_stopping: Any
    valid: Any
    y_valid: np.ndarray


@dataclass
class SearchData:
    """The training set as every trial sees it: the problem, its folds and their pools."""

    problem: core.Problem
    folds: list[Fold]
    pools: list[FoldPools]

    @classmethod
    def build(cls, frame: pl.DataFrame, problem: core.Problem, folds: list[Fold]) -> SearchData:
        from catboost import Pool

        x = core.to_pool_frame(frame, problem)
        y = problem.kind.encode(frame.get_column(problem.target), problem.classes)
        times = frame.get_column(problem.event_time).to_physical().to_numpy()
        pools = []
        for k, fold in enumerate(folds):
            cut = _early_stopping_cut(times[fold.train])
            fit_rows, stop_rows = fold.train[:cut], fold.train[cut:]
            for part, rows in (("fit", fit_rows), ("early-stopping", stop_rows),
                               ("validation", fold.valid)):  # fmt: skip
                if rows.size < MIN_FOLD_ROWS:
                    raise SearchError(
                        f"folds = {len(folds)}: fold {k + 1} has {rows.size} {part} rows "
                        f"(fewer than {MIN_FOLD_ROWS}): use fewer folds or a larger training set"
                    )

            def pool(rows: np.ndarray) -> Any:
                return Pool(x.iloc[rows], y[rows], cat_features=problem.categorical)

            pools.append(
                FoldPools(pool(fit_rows), pool(stop_rows), pool(fold.valid), y[fold.valid])
            )
        return cls(problem, folds, pools)


ROUNDS_PER_FOLD = 1_000_000
"""Pruning steps: boosting round ``r`` of fold ``k`` is step ``k * ROUNDS_PER_FOLD + r``, and
fold ``k``'s score is step :func:`fold_step` ``(k)``, after all of its rounds."""
REPORT_EVERY = 50
"""Boosting rounds between two reports of the early-stopping loss to the pruner."""


class Pruned(Exception):
    """Raised by :func:`fold_scores` when its per-round hook says the trial is to stop."""


def fold_step(k: int) -> int:
    """The pruning step of fold ``k``'s score (after every round of that fold)."""
    return k * ROUNDS_PER_FOLD + ROUNDS_PER_FOLD - 1


class _RoundReporter:
    """CatBoost callback: every :data:`REPORT_EVERY` rounds, the early-stopping set's loss
    (CatBoost's first validation metric: lower is better) to ``hook(step, loss)``; a True
    answer stops the fit."""

    def __init__(self, fold: int, hook: Callable[[int, float], bool]) -> None:
        self.fold = fold
        self.hook = hook
        self.stopped = False

    def after_iteration(self, info: Any) -> bool:
        if info.iteration % REPORT_EVERY:
            return True
        validation = info.metrics.get("validation")
        if not validation:
            return True
        loss = float(next(iter(validation.values()))[-1])
        if self.hook(self.fold * ROUNDS_PER_FOLD + info.iteration, loss):
            self.stopped = True
            return False
        return True


def fold_scores(
    data: SearchData,
    config: TrainConfig,
    thread_count: int,
    report: Callable[[int, float], None] | None = None,
    every_round: Callable[[int, float], bool] | None = None,
) -> list[float]:
    """The primary metric of ``config`` on each fold (fit on the fold's older training rows,
    early stopping on its newest, scored on its validation rows). ``report(k, score)`` is told
    each fold's score as it comes (it may raise to stop the trial: pruning).
    ``every_round(step, loss)`` is told the early-stopping loss as the fit goes (every
    :data:`REPORT_EVERY` rounds; steps as :data:`ROUNDS_PER_FOLD` says): True stops the fit
    and raises :class:`Pruned`, so a bad trial ends within its first fold."""
    kind = data.problem.kind
    scores = []
    for k, pools in enumerate(data.pools):
        params = config.catboost_params(len(data.problem.categorical), pools.fit.num_row())
        model = kind.estimator(**{**params, "thread_count": thread_count})
        reporter = _RoundReporter(k, every_round) if every_round is not None else None
        model.fit(
            pools.fit,
            eval_set=pools.early_stopping,
            use_best_model=True,
            callbacks=[reporter] if reporter is not None else None,
        )
        if reporter is not None and reporter.stopped:
            raise Pruned(f"pruned in fold {k + 1}, round {model.tree_count_}")
        predicted = kind.scores(model, pools.valid, thread_count=thread_count)
        score = kind.metrics(pools.y_valid, predicted, data.problem.classes)[kind.primary_metric]
        scores.append(float(score))
        if report is not None:
            report(k, float(score))
    return scores


# --- the search -----------------------------------------------------------------------------


def suggest(trial: Any, config: SearchConfig) -> dict[str, Any]:
    """One trial's hyperparameters from the search space."""
    params: dict[str, Any] = {}
    for name in SEARCHED:
        low, high = getattr(config, name)
        if name in INT_RANGES:
            params[name] = trial.suggest_int(name, int(low), int(high))
        else:
            params[name] = trial.suggest_float(
                name, float(low), float(high), log=name in LOG_RANGES
            )
    return params


def trial_config(base: TrainConfig, search: SearchConfig, params: dict[str, Any]) -> TrainConfig:
    """The training config a trial fits: the base with the trial's hyperparameters (and the
    search's iteration cap)."""
    update = dict(params)
    if search.iterations is not None:
        update["iterations"] = search.iterations
    return base.model_copy(update=update)


def search_id(name: str, fingerprint: str, config: SearchConfig, base: TrainConfig) -> str:
    """``<dataset>-<12 hex>``: a hash of the training set's fingerprint and every setting that
    changes what a trial means (space, folds, seed, family, iterations, the base config); not
    of the budget or parallelism, so a search given more trials or time continues its study."""
    if config.study_name:
        return config.study_name
    meaning = {
        "fingerprint": fingerprint,
        "search": config.model_dump(exclude={"n_trials", "timeout_s", "parallel", "resume"}),
        "base": base.model_dump(exclude={"params_from", "thread_count"}),
    }
    digest = hashlib.sha256(json.dumps(meaning, sort_keys=True, default=str).encode()).hexdigest()
    return f"{name}-{digest[:12]}"


def study_path(name: str) -> Path:
    """The dataset's study storage: ``$ML_ASSETS_HOME/search/<dataset>.sqlite``."""
    return settings.current().search_path / f"{name}.sqlite"


@dataclass
class SearchResult:
    """What a search found, and what it cost."""

    search_id: str
    dataset: str
    metric: str
    higher_is_better: bool
    best_params: dict[str, Any]
    best_fold_scores: list[float]
    default_fold_scores: list[float]
    trials_complete: int
    trials_pruned: int
    trials_failed: int
    trials_this_run: int
    stopped_by: str
    """``n_trials`` (the trial budget reached), ``timeout`` or ``done`` (a resumed search that
    had already run its trials)."""
    seconds: float
    fingerprint: str
    folds: int
    default_seconds: float = 0.0
    """Scoring the default config on the folds (0 on a resume: stored with the study)."""
    version: int | None = None
    parent_run_id: str | None = None
    plots: dict[str, bytes] = field(default_factory=dict)
    """The optimization-history and parameter-importance PNGs (also the parent run's)."""
    notes: list[str] = field(default_factory=list)

    @property
    def best_score(self) -> float:
        return float(np.mean(self.best_fold_scores))

    @property
    def best_spread(self) -> float:
        return float(np.std(self.best_fold_scores))

    @property
    def default_score(self) -> float:
        return float(np.mean(self.default_fold_scores))

    @property
    def default_spread(self) -> float:
        return float(np.std(self.default_fold_scores))

    @property
    def trials(self) -> int:
        """Trials counted toward ``n_trials`` (complete and pruned)."""
        return self.trials_complete + self.trials_pruned

    @property
    def pruned_share(self) -> float:
        return self.trials_pruned / self.trials if self.trials else 0.0

    def to_json(self) -> dict[str, Any]:
        """The best config as a versioned document (the ``best_config.json`` artifact)."""
        return {
            "format": RESULT_FORMAT,
            "search_id": self.search_id,
            "version": self.version,
            "dataset": self.dataset,
            "params": self.best_params,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "cv_score": self.best_score,
            "cv_spread": self.best_spread,
            "fold_scores": self.best_fold_scores,
            "default_cv_score": self.default_score,
            "default_fold_scores": self.default_fold_scores,
            "folds": self.folds,
            "trials_complete": self.trials_complete,
            "trials_pruned": self.trials_pruned,
            "training_set_fingerprint": self.fingerprint,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
        }


def _open_study(sid: str, path: Path, config: SearchConfig, higher_is_better: bool) -> Any:
    import optuna

    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 60}}
    )
    if not config.resume:
        with contextlib.suppress(KeyError):  # no such study yet
            optuna.delete_study(study_name=sid, storage=storage)
    # TPE's random start: a third of the budget, at most its usual 10 trials
    startup = max(1, min(10, config.n_trials // 3))
    study = optuna.create_study(
        storage=storage,
        study_name=sid,
        direction="maximize" if higher_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=startup),
        # rounds of the first fold before the pruner may stop a trial: the loss of the first
        # rounds says little about where a trial ends
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=min(3, startup), n_warmup_steps=2 * REPORT_EVERY
        ),
        load_if_exists=True,
    )
    # a killed search leaves its running trials behind: they count for nothing, and are failed
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        log.info("search %s: trial %d was left running (killed search): failed", sid, t.number)
    return study


def round_hook(trial: Any, kind: Any) -> Callable[[int, float], bool]:
    """The per-round pruning hook of an Optuna ``trial``: the loss reported as a value in the
    study's direction (negated when the primary metric is higher-is-better), then the
    pruner's decision."""
    sign = -1.0 if kind.higher_is_better else 1.0

    def hook(step: int, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        trial.report(sign * loss, step=step)
        return bool(trial.should_prune())

    return hook


def run_search(
    frame: pl.DataFrame,
    problem: core.Problem,
    config: SearchConfig,
    *,
    name: str,
    fingerprint: str,
    base: TrainConfig | None = None,
    tracking: Any = None,
    tags: dict[str, str] | None = None,
    storage: Path | None = None,
    on_trial: Callable[[Any], None] | None = None,
) -> SearchResult:
    """Search ``config``'s space on ``frame`` and return the best config found.

    Checks every setting and cuts the folds before anything is tracked. Resumes the stored
    study of the same search id (complete and pruned trials count toward ``n_trials``). With
    ``tracking`` (a :class:`~ml_assets.registry.tracking.SearchTracking`), one parent MLflow
    run per search (reused on resume) with a nested run per trial, by the standard ``tags``;
    the parent gets the best config as a versioned artifact. ``on_trial(frozen_trial)`` is
    called after each trial (tests use it to interrupt a search).
    """
    import optuna

    started = time.perf_counter()
    base = base or TrainConfig()
    check_search_config(config, frame.height)
    folds = time_folds(frame.get_column(problem.event_time), config.folds)
    data = SearchData.build(frame, problem, folds)
    kind = problem.kind
    sid = search_id(name, fingerprint, config, base)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(sid, storage or study_path(name), config, kind.higher_is_better)
    threads = max(1, cores() // config.parallel)

    parent = None
    if tracking is not None:
        parent = tracking.start_search(
            name,
            sid,
            tags or {},
            {**config.model_dump(), "thread_count_per_trial": threads},
            resume=config.resume,
        )

    default = study.user_attrs.get("default_fold_scores")
    default_started = time.perf_counter()
    if default is None:
        default = fold_scores(data, trial_config(base, config, {}), cores())
        study.set_user_attr("default_fold_scores", default)
    default_seconds = time.perf_counter() - default_started
    lock = threading.Lock()

    def objective(trial: Any) -> float:
        params = suggest(trial, config)

        def report(k: int, score: float) -> None:
            if not math.isfinite(score):
                raise optuna.TrialPruned(f"fold {k + 1} score is {score}")
            trial.report(score, step=fold_step(k))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {k + 1}")

        cfg = trial_config(base, config, params)
        try:
            scores = fold_scores(data, cfg, threads, report, round_hook(trial, kind))
        except Pruned as stop:
            raise optuna.TrialPruned(str(stop)) from None
        trial.set_user_attr("fold_scores", scores)
        return float(np.mean(scores))

    def logged(study: Any, trial: Any) -> None:
        log.info("search %s: trial %d %s %s", sid, trial.number, trial.state.name, trial.value)
        if parent is not None:
            with lock:
                tracking.log_trial(name, parent, sid, tags or {}, trial)
        if on_trial is not None:
            on_trial(trial)

    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=counted))
    remaining = config.n_trials - done
    ran = 0
    if remaining > 0:
        left = config.timeout_s - (time.perf_counter() - started)
        before = len(study.trials)
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=max(left, 1e-3),
            n_jobs=config.parallel,
            callbacks=[logged],
            catch=(),
        )
        ran = len(study.trials) - before
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]
    n_counted = sum(s in counted for s in states)
    stopped = (
        "done" if remaining <= 0 else ("n_trials" if n_counted >= config.n_trials else "timeout")
    )
    notes = []
    if complete:
        best = study.best_trial
        best_params = {k: best.params[k] for k in SEARCHED}
        best_scores = list(best.user_attrs["fold_scores"])
    else:
        notes.append("no trial completed within the budget: the best config is the default")
        best_params = {k: getattr(base, k) for k in SEARCHED}
        best_scores = list(default)
    result = SearchResult(
        search_id=sid,
        dataset=name,
        metric=kind.primary_metric,
        higher_is_better=kind.higher_is_better,
        best_params=best_params,
        best_fold_scores=best_scores,
        default_fold_scores=list(default),
        trials_complete=len(complete),
        trials_pruned=states.count(optuna.trial.TrialState.PRUNED),
        trials_failed=states.count(optuna.trial.TrialState.FAIL),
        trials_this_run=ran,
        stopped_by=stopped,
        seconds=time.perf_counter() - started,
        fingerprint=fingerprint,
        folds=config.folds,
        default_seconds=default_seconds,
        parent_run_id=parent,
        notes=notes,
    )
    if tracking is not None:
        with tempfile.TemporaryDirectory() as tmp:
            paths = search_plots(study, result, Path(tmp), config.seed)
            tracking.finish_search(name, parent, result, paths)
            result.plots = {k: p.read_bytes() for k, p in paths.items()}
    return result


# --- plots ----------------------------------------------------------------------------------


def search_plots(study: Any, result: SearchResult, folder: Path, seed: int = 0) -> dict[str, Path]:
    """The optimization history and, with two or more complete trials, the parameter
    importances (fANOVA, seeded) as PNG files in ``folder`` (matplotlib, nothing fetched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]
    pruned = [
        t for t in trials if t.state is optuna.trial.TrialState.PRUNED and t.intermediate_values
    ]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if done:
        ax.plot([t.number for t in done], [t.value for t in done], "o", label="complete trial")
        pick = max if result.higher_is_better else min
        best, line = None, []
        for t in sorted(done, key=lambda t: t.number):
            best = t.value if best is None else pick(best, t.value)
            line.append((t.number, best))
        ax.step(*zip(*line, strict=True), where="post", label="best so far")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.plot([t.number for t in pruned], last, "x", color="grey", label="pruned (last fold)")
    ax.axhline(result.default_score, ls="--", color="red", label="default config")
    ax.set(
        xlabel="trial",
        ylabel=f"CV {result.metric}",
        title=f"Optimization history ({result.search_id})",
    )
    ax.legend(loc="best", fontsize=8)
    out["optimization_history"] = folder / "optimization_history.png"
    fig.savefig(out["optimization_history"], dpi=90, bbox_inches="tight")
    plt.close(fig)
    if len(done) < 2:
        result.notes.append(f"parameter importance needs 2 complete trials, has {len(done)}")
        return out
    try:
        importance = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)
        )
    except (RuntimeError, ValueError) as exc:  # e.g. every trial with the same values
        result.notes.append(f"parameter importance not computed: {exc}")
        return out
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="importance (fANOVA)", title="Parameter importance")
    out["param_importance"] = folder / "param_importance.png"
    fig.savefig(out["param_importance"], dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out
