"""The monitoring suite: NannyML's calculators over one partition, as tidy result rows.

Pure (no Dagster): polars in, polars out; NannyML works on pandas, so frames are converted at
the boundary (:func:`to_nannyml_frame`) and NannyML's results are tidied into
:data:`~ml_assets.monitor.schema.RESULTS_SCHEMA` rows.

What is computed, all by NannyML (no hand-written statistics), for the partition as ONE chunk
against thresholds NannyML derives from the reference cut into ``reference_chunks`` chunks
(:mod:`~ml_assets.monitor.chunking`):

* ``univariate_drift``: every model input; continuous ``jensen_shannon`` and
  ``kolmogorov_smirnov``, categorical ``chi2`` and ``jensen_shannon`` (``metric`` = the method).
* ``multivariate_drift``: PCA reconstruction error (``DataReconstructionDriftCalculator``).
* ``domain_classifier``: ``DomainClassifierCalculator`` AUROC; costly (LightGBM with 5-fold CV on
  reference + partition), so on by default only for partitions of at most
  :data:`DOMAIN_CLASSIFIER_MAX_ROWS` rows.
* ``estimated_performance``: the kind's estimator (CBPE or DLE) on ``kind.nannyml_metrics``;
  needs no labels.
* ``realized_performance``: ``PerformanceCalculator`` on the partition's labelled rows, with
  ``label_coverage`` = labelled rows / partition rows.
* ``missing_values`` (every input) and ``unseen_values`` (categorical inputs), as rates.

Fit once per champion and reuse (:func:`fit_suite` then :meth:`FittedSuite.run` per partition);
:func:`run_suite` does both in one call.

Bad input gives a clear result, never an exception, and never a silently missing row:

* an analysis partition with no rows returns an EMPTY table (the schema has no status column to
  say "no predictions"; the caller reports that from the empty result);
* otherwise every expected row (calculator x column x method x metric) is present; where NannyML
  cannot give a value (an all-null feature's drift, a metric undefined on one row, a calculator
  that failed), ``value`` and ``alert`` are null. Why is logged and kept in
  :attr:`FittedSuite.errors` (``strict=True`` raises instead, for tests and debugging);
* a feature the reference has but the partition lacks (a log segment of an older model) is
  monitored as an all-null column: missing values 1.0, drift null;
* a partition with no labels yet: realized performance rows with null value, NannyML's
  reference thresholds, ``label_coverage`` 0;
* a reference too small for thresholds (fewer than ``2 * min_chunk_rows`` rows, so fewer than
  two reference chunks): values are still computed, but ``lower_threshold``, ``upper_threshold``
  and ``alert`` are null (no threshold is better than one from a single chunk's zero spread); an
  empty reference gives every row null.

NannyML is imported inside functions only (``import nannyml`` costs seconds).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import polars as pl

import ml_assets.settings  # noqa: F401  (telemetry off before nannyml is imported)
from ml_assets.monitor.chunking import ANALYSIS, REFERENCE, partition_chunker
from ml_assets.monitor.schema import RESULTS_SCHEMA, Calculator, reference_id
from ml_assets.problems import ProblemKind, problem_kind

log = logging.getLogger(__name__)

ALL: frozenset[Calculator] = frozenset(
    {
        Calculator.UNIVARIATE_DRIFT,
        Calculator.MULTIVARIATE_DRIFT,
        Calculator.DOMAIN_CLASSIFIER,
        Calculator.ESTIMATED_PERFORMANCE,
        Calculator.REALIZED_PERFORMANCE,
        Calculator.MISSING_VALUES,
        Calculator.UNSEEN_VALUES,
    }
)
"""Every calculator the suite runs (``operational`` rows come from elsewhere)."""

CONTINUOUS_METHODS = ("jensen_shannon", "kolmogorov_smirnov")
CATEGORICAL_METHODS = ("chi2", "jensen_shannon")
DOMAIN_CLASSIFIER_MAX_ROWS = 50_000
"""Partitions up to this many rows get the domain classifier unless told otherwise."""
DEFAULT_REFERENCE_CHUNKS = 6
"""NannyML warns below six chunks. Thresholds are the spread of a metric over reference chunks,
so they fit a partition best when a reference chunk holds about as many rows as a partition:
pass ``reference_chunk_rows`` when the partition size is known."""
MIN_CHUNK_ROWS = 100
"""The smallest reference chunk worth a threshold; fewer rows make fewer chunks."""

RECONSTRUCTION = ("data_reconstruction", "reconstruction_error")
DOMAIN = ("domain_classifier", "domain_classifier_auroc")
REALIZED = "realized"
MISSING = ("missing_values", "missing_values_rate")
UNSEEN = ("unseen_values", "unseen_values_rate")
# LightGBM (domain classifier, DLE) prints [Info] lines per model unless told not to.
# One LightGBM thread: on a small partition the domain classifier spends its time spinning up
# OpenMP threads, and on a shared 2-core machine n_jobs=-1 took 12-129 s where 1 takes 2.6 s.
QUIET_LGBM = {"verbosity": -1, "n_jobs": 1}


@dataclass(frozen=True)
class MonitoredModel:
    """What the suite needs to know about the champion: its kind, inputs and outputs."""

    kind: ProblemKind
    features: list[str]
    categorical: list[str]
    classes: list[Any]
    target: str
    timestamp: str
    drift_exempt: tuple[str, ...] = ()
    """Inputs drift leaves out (the feature spec's :attr:`~ml_assets.features.spec.FeatureSpec.
    drift_exempt`: calendar parts, whose every new month would be a drift against the
    reference's months, and aggregates of labels); they stay model inputs and are monitored
    for missing values."""

    classifier_exempt: tuple[str, ...] = ()
    """Inputs the domain classifier also leaves out: window aggregates per group. A partition
    holds a few levels of such a feature (one per group, moving day by day), which identify the
    period they come from, so a classifier tells any two periods apart by them (measured on the
    car-loan weeks after the retrain: AUROC 0.84-0.86 with them, 0.49-0.50 without, every week
    against a reference of the same regime)."""

    @classmethod
    def from_problem(
        cls,
        problem: Any,
        drift_exempt: Iterable[str] = (),
        classifier_exempt: Iterable[str] = (),
    ) -> MonitoredModel:
        """From a :class:`ml_assets.train.core.Problem` (the registry's ``problem`` tag), and
        the feature spec's drift-exempt features (and those the domain classifier leaves out)."""
        return cls(
            problem_kind(problem.problem_type),
            list(problem.features),
            list(problem.categorical),
            list(problem.classes),
            problem.target,
            problem.event_time,
            tuple(c for c in drift_exempt if c in problem.features),
            tuple(c for c in classifier_exempt if c in problem.features),
        )

    @property
    def drift_features(self) -> list[str]:
        """The inputs drift is computed on: every feature but the exempt ones."""
        return [f for f in self.features if f not in self.drift_exempt]

    @property
    def classifier_features(self) -> list[str]:
        """The inputs of the domain classifier: the drift inputs but window aggregates."""
        return [f for f in self.drift_features if f not in self.classifier_exempt]

    @property
    def continuous(self) -> list[str]:
        return [f for f in self.features if f not in self.categorical]

    @property
    def outputs(self) -> list[str]:
        """The kind's prediction columns (``probability``/``probability_<c>``, ``prediction``)."""
        return list(self.kind.output_schema(self.classes))

    @property
    def proba(self) -> str | dict[str, str]:
        """CBPE's ``y_pred_proba``: the probability column, or class -> column (multiclass)."""
        proba = self.kind.nannyml_proba(self.classes)
        assert proba is not None, "only classifiers have probabilities"
        return proba


def to_nannyml_frame(frame: pl.DataFrame, model: MonitoredModel) -> tuple[Any, list[str]]:
    """The pandas frame NannyML gets, and the feature columns ``frame`` lacked.

    Categoricals become text (pandas ``object``: NannyML treats them as categorical), other inputs
    float64 (nulls NaN); a missing feature becomes an all-null column of its type. The event time
    becomes naive UTC (all null when the frame lacks it). Labels and predictions as NannyML
    expects them per kind: binary 0/1 floats (the second class in sorted order is 1), multiclass
    class names as text, regression floats.
    Prediction or label columns the frame lacks are left out (the calculators needing them report
    null). Only the columns NannyML uses are converted.
    """
    cols = frame.columns
    missing = [f for f in model.features if f not in cols]
    exprs: list[pl.Expr] = []
    for f in model.features:
        dtype = pl.String if f in model.categorical else pl.Float64
        exprs.append((pl.col(f).cast(dtype) if f in cols else pl.lit(None, dtype=dtype)).alias(f))
    ts_type = frame.schema.get(model.timestamp)
    # NannyML only orders rows and plots by the event time: a frame without it is not fatal.
    ts = pl.col(model.timestamp) if ts_type is not None else pl.lit(None, dtype=pl.Datetime("us"))
    if isinstance(ts_type, pl.Datetime) and ts_type.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    exprs.append(ts.alias(model.timestamp))

    labels = [model.target] if model.target in cols else []
    for name in [*model.outputs, *labels]:
        if name not in cols or name in model.features:
            continue
        col = pl.col(name)
        if name.startswith("probability"):
            exprs.append(col.cast(pl.Float64))
        else:
            exprs.append(model.kind.nannyml_label(col, model.classes).alias(name))
    return frame.select(exprs).to_pandas(), missing


# --- the rows ------------------------------------------------------------------------------

Key = tuple[Calculator, str | None, str, str]
"""(calculator, column, method, metric): one result row."""


@dataclass
class _Value:
    value: float | None = None
    lower: float | None = None
    upper: float | None = None
    alert: bool | None = None
    label_coverage: float | None = None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _from_row(row: Any, prefix: tuple[str, ...]) -> _Value:
    """Value, thresholds and alert of one NannyML result row (a multi-index Series)."""

    def get(prop: str) -> Any:
        return row.get((*prefix, prop))

    value = _num(get("value"))
    alert = get("alert")
    return _Value(
        value=value,
        lower=_num(get("lower_threshold")),
        upper=_num(get("upper_threshold")),
        alert=None if value is None or alert is None else bool(alert),
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """NannyML warns that one analysis chunk is 'too low a number of chunks', and pandas and
    LightGBM warn from inside it: none of it is actionable here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"nannyml.*")
        warnings.filterwarnings("ignore", module=r"lightgbm.*")
        warnings.filterwarnings("ignore", message=r".*number of chunks is too low.*")
        yield


@dataclass
class _Fitted:
    calc: Any
    chunker: Any


@dataclass
class FittedSuite:
    """NannyML calculators fitted on one champion's reference, ready to monitor partitions.

    Build with :func:`fit_suite`. Fitting costs most of a small partition's monitoring time, so
    keep one per champion version. The domain classifier is fitted the first time a partition
    needs it. ``results`` holds NannyML's own result objects of the last :meth:`run` (for
    :func:`~ml_assets.monitor.plots.plot_results`); ``errors`` why a calculator gave nulls.
    """

    model: MonitoredModel
    calculators: frozenset[Calculator]
    reference_rows: int
    reference_chunks: int
    thresholds: bool
    """False when the reference was too small for thresholds (they are reported null)."""
    reference_starts: list[dt.datetime] | None = None
    """Naive-UTC starts of the partition windows the reference is chunked by (None: equal
    chunks)."""
    min_chunk_rows: int = 1
    strict: bool = False
    fitted: dict[Calculator, _Fitted] = field(default_factory=dict)
    results: dict[Calculator, Any] = field(default_factory=dict)
    errors: dict[Calculator, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    _reference: Any = None

    # --- fitting --------------------------------------------------------------------------

    def _attempt(self, calculator: Calculator, what: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            with _quiet():
                return fn()
        except Exception as exc:
            if self.strict:
                raise
            reason = f"{what} failed: {type(exc).__name__}: {exc}"
            log.warning("monitoring %s: %s", calculator.value, reason)
            self.errors[calculator] = reason
            return None
        finally:
            key = f"{what}:{calculator.value}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started

    def _fit(self, calculator: Calculator) -> None:
        if self._reference is None or len(self._reference) == 0:
            self.errors[calculator] = "the reference has no rows: nothing to compare against"
            return
        build = _BUILDERS[calculator]
        chunker = partition_chunker(
            self.reference_chunks, self.model.timestamp, self.reference_starts, self.min_chunk_rows
        )
        reference = self._reference
        if calculator in (Calculator.ESTIMATED_PERFORMANCE, Calculator.REALIZED_PERFORMANCE):
            needed = _performance_columns(self.model)
            absent = [c for c in needed if c not in reference.columns]
            if absent:
                self.errors[calculator] = f"the reference lacks {absent}"
                return
            reference = reference[reference[self.model.target].notna()]
            if len(reference) == 0:
                self.errors[calculator] = "the reference has no labelled rows"
                return

        def fit() -> Any:
            chunker.phase = REFERENCE
            fitted = build(self.model, chunker).fit(reference)
            if calculator is Calculator.ESTIMATED_PERFORMANCE:
                _thresholds_from_estimates(fitted)
            return fitted

        calc = self._attempt(calculator, "fit", fit)
        if calc is not None:
            self.fitted[calculator] = _Fitted(calc, chunker)

    # --- one partition --------------------------------------------------------------------

    def run(
        self,
        analysis: pl.DataFrame,
        *,
        dataset: str,
        partition: str,
        champion_version: str,
        chunk_start: dt.datetime | None,
        chunk_end: dt.datetime | None,
        domain_classifier: bool | None = None,
        only: Iterable[Calculator] | None = None,
    ) -> pl.DataFrame:
        """Monitor one partition's rows as ONE chunk; :data:`RESULTS_SCHEMA` rows.

        ``analysis``: the partition's scored rows (features, event time, the kind's prediction
        columns, the label where it has arrived). ``domain_classifier``: None runs it on
        partitions of at most :data:`DOMAIN_CLASSIFIER_MAX_ROWS` rows. ``only``: compute just
        these calculators (a late label batch recomputes only the realized performance). No
        rows: an empty table.
        """
        self.results = {}
        self.errors = {c: e for c, e in self.errors.items() if c not in self.fitted}
        rows = analysis.height
        if rows == 0:
            return _frame([], dataset, partition, champion_version, chunk_start, chunk_end, 0)
        wanted = set(self.calculators) if only is None else set(self.calculators) & set(only)
        if domain_classifier is None:
            domain_classifier = rows <= DOMAIN_CLASSIFIER_MAX_ROWS
        if not domain_classifier:
            wanted.discard(Calculator.DOMAIN_CLASSIFIER)
        elif Calculator.DOMAIN_CLASSIFIER in wanted and Calculator.DOMAIN_CLASSIFIER not in (
            self.fitted
        ):
            self._fit(Calculator.DOMAIN_CLASSIFIER)

        data, missing = to_nannyml_frame(analysis, self.model)
        if missing:
            log.warning(
                "partition %s lacks features %s: monitored as all-null columns", partition, missing
            )
        values: dict[Key, _Value] = {}
        for calculator in sorted(wanted, key=_ORDER.index):
            values.update(self._calculate(calculator, data))
        ordered = [(key, values.get(key, _Value())) for key in self.expected(wanted)]
        if not self.thresholds:
            for _, v in ordered:
                v.lower = v.upper = v.alert = None
        return _frame(ordered, dataset, partition, champion_version, chunk_start, chunk_end, rows)

    def expected(self, calculators: Iterable[Calculator]) -> list[Key]:
        """Every row the calculators give for a partition, in a stable order."""
        m = self.model
        out: list[Key] = []
        for c in sorted(set(calculators), key=_ORDER.index):
            if c is Calculator.UNIVARIATE_DRIFT:
                for f in m.drift_features:
                    methods = CATEGORICAL_METHODS if f in m.categorical else CONTINUOUS_METHODS
                    out += [(c, f, meth, meth) for meth in methods]
            elif c is Calculator.MULTIVARIATE_DRIFT:
                out.append((c, None, *RECONSTRUCTION))
            elif c is Calculator.DOMAIN_CLASSIFIER:
                out.append((c, None, *DOMAIN))
            elif c is Calculator.ESTIMATED_PERFORMANCE:
                out += [(c, None, m.kind.nannyml_estimator, x) for x in m.kind.nannyml_metrics]
            elif c is Calculator.REALIZED_PERFORMANCE:
                out += [(c, None, REALIZED, x) for x in m.kind.nannyml_metrics]
            elif c is Calculator.MISSING_VALUES:
                out += [(c, f, *MISSING) for f in m.features]
            elif c is Calculator.UNSEEN_VALUES:
                out += [(c, f, *UNSEEN) for f in m.categorical]
        return out

    def _calculate(self, calculator: Calculator, data: Any) -> dict[Key, _Value]:
        fitted = self.fitted.get(calculator)
        if fitted is None:
            return {}
        m = self.model
        if calculator in (Calculator.ESTIMATED_PERFORMANCE, Calculator.REALIZED_PERFORMANCE):
            absent = [c for c in _performance_columns(m, labels=False) if c not in data.columns]
            if absent:
                self.errors[calculator] = f"the partition lacks prediction columns {absent}"
                return {}
        if calculator is Calculator.REALIZED_PERFORMANCE:
            return self._realized(fitted, data)

        def calc() -> Any:
            fitted.chunker.phase = ANALYSIS
            if calculator is Calculator.ESTIMATED_PERFORMANCE:
                return fitted.calc.estimate(data)
            return fitted.calc.calculate(data)

        result = self._attempt(calculator, "calculate", calc)
        if result is None:
            return {}
        self.results[calculator] = result
        row = result.filter(period="analysis").to_df().iloc[-1]
        out: dict[Key, _Value] = {}
        for key in self.expected([calculator]):
            _, column, method, metric = key
            if calculator is Calculator.UNIVARIATE_DRIFT:
                prefix: tuple[str, ...] = (str(column), method)
            elif column is not None:
                prefix = (column,)
            elif calculator is Calculator.MULTIVARIATE_DRIFT:
                prefix = ("reconstruction_error",)
            else:
                prefix = (metric,)
            out[key] = _from_row(row, prefix)
        return out

    def _realized(self, fitted: _Fitted, data: Any) -> dict[Key, _Value]:
        m = self.model
        rows = len(data)
        if m.target not in data.columns:
            labelled = data.iloc[0:0]
        else:
            known = data[m.target].notna()
            labelled = data if known.all() else data[known]  # no copy when all have arrived
        coverage = len(labelled) / rows
        keys = self.expected([Calculator.REALIZED_PERFORMANCE])
        if len(labelled) == 0:
            # Nothing to compute yet; the thresholds are the reference's all the same.
            by_name = {x.column_name: x for x in fitted.calc.metrics}
            return {
                k: _Value(
                    lower=_num(getattr(by_name.get(k[3]), "lower_threshold_value", None)),
                    upper=_num(getattr(by_name.get(k[3]), "upper_threshold_value", None)),
                    label_coverage=0.0,
                )
                for k in keys
            }

        def calc() -> Any:
            fitted.chunker.phase = ANALYSIS
            return fitted.calc.calculate(labelled)

        result = self._attempt(Calculator.REALIZED_PERFORMANCE, "calculate", calc)
        if result is None:
            return {k: _Value(label_coverage=coverage) for k in keys}
        self.results[Calculator.REALIZED_PERFORMANCE] = result
        row = result.filter(period="analysis").to_df().iloc[-1]
        out = {}
        for k in keys:
            v = _from_row(row, (k[3],))
            v.label_coverage = coverage
            out[k] = v
        return out


_ORDER = [
    Calculator.UNIVARIATE_DRIFT,
    Calculator.MULTIVARIATE_DRIFT,
    Calculator.DOMAIN_CLASSIFIER,
    Calculator.ESTIMATED_PERFORMANCE,
    Calculator.REALIZED_PERFORMANCE,
    Calculator.MISSING_VALUES,
    Calculator.UNSEEN_VALUES,
]


def _performance_columns(model: MonitoredModel, labels: bool = True) -> list[str]:
    return [*model.outputs, *([model.target] if labels else [])]


def _frame(
    rows: Sequence[tuple[Key, _Value]],
    dataset: str,
    partition: str,
    champion_version: str,
    chunk_start: dt.datetime | None,
    chunk_end: dt.datetime | None,
    n: int,
) -> pl.DataFrame:
    ref = reference_id(dataset, champion_version)
    data = {
        "dataset": [dataset] * len(rows),
        "partition": [partition] * len(rows),
        "chunk_start": [_as_utc(chunk_start)] * len(rows),
        "chunk_end": [_as_utc(chunk_end)] * len(rows),
        "champion_version": [champion_version] * len(rows),
        "reference": [ref] * len(rows),
        "calculator": [k[0].value for k, _ in rows],
        "column": [k[1] for k, _ in rows],
        "method": [k[2] for k, _ in rows],
        "metric": [k[3] for k, _ in rows],
        "value": [v.value for _, v in rows],
        "lower_threshold": [v.lower for _, v in rows],
        "upper_threshold": [v.upper for _, v in rows],
        "alert": [v.alert for _, v in rows],
        "rows": [n] * len(rows),
        "label_coverage": [v.label_coverage for _, v in rows],
    }
    return pl.DataFrame(data, schema=RESULTS_SCHEMA)


def _as_utc(bound: dt.datetime | None) -> dt.datetime | None:
    """A chunk bound in UTC (a naive bound is UTC by convention)."""
    if bound is None:
        return None
    return bound.replace(tzinfo=dt.UTC) if bound.tzinfo is None else bound.astimezone(dt.UTC)


# --- the calculators -----------------------------------------------------------------------


def _univariate(model: MonitoredModel, chunker: Any) -> Any:
    import nannyml as nml

    drift = model.drift_features
    return nml.UnivariateDriftCalculator(
        column_names=drift,
        treat_as_categorical=[c for c in model.categorical if c in drift] or None,
        treat_as_numerical=[c for c in model.continuous if c in drift] or None,
        timestamp_column_name=model.timestamp,
        continuous_methods=list(CONTINUOUS_METHODS),
        categorical_methods=list(CATEGORICAL_METHODS),
        chunker=chunker,
    )


def _reconstruction(model: MonitoredModel, chunker: Any) -> Any:
    import nannyml as nml

    return nml.DataReconstructionDriftCalculator(
        column_names=model.drift_features, timestamp_column_name=model.timestamp, chunker=chunker
    )


def _domain(model: MonitoredModel, chunker: Any) -> Any:
    import nannyml as nml
    from nannyml.drift.multivariate.domain_classifier.calculator import (
        DEFAULT_LGBM_HYPERPARAMS,
    )

    # The thresholds are constant (0.45-0.65), so reference chunks only feed the plot: two are
    # enough, and each costs a 5-fold LightGBM fit on the whole reference.
    chunker.max_reference_chunks = 2
    return nml.DomainClassifierCalculator(
        feature_column_names=model.classifier_features,
        treat_as_categorical=[c for c in model.categorical if c in model.classifier_features]
        or None,
        timestamp_column_name=model.timestamp,
        chunker=chunker,
        hyperparameters={**DEFAULT_LGBM_HYPERPARAMS, **QUIET_LGBM},
    )


def performance_thresholds(model: MonitoredModel) -> dict[str, Any]:
    """NannyML's thresholds of the kind's metrics, one-sided: the mean of the reference chunks'
    values less (or, for an error metric, plus) three standard deviations. Performance better
    than the reference's is no incident, so it never alerts (nor launches a retrain)."""
    from nannyml.thresholds import StandardDeviationThreshold

    lower, upper = (3, None) if model.kind.higher_is_better else (None, 3)
    return {
        m: StandardDeviationThreshold(std_lower_multiplier=lower, std_upper_multiplier=upper)
        for m in model.kind.nannyml_metrics
    }


def _thresholds_from_estimates(estimator: Any) -> None:
    """Set a fitted CBPE/DLE's thresholds from the spread of its own ESTIMATES over the
    reference chunks, instead of NannyML's default, the spread of the REALIZED metric.

    Why: the realized metric of a chunk varies with the chunk's labels (on a week of about 1,150
    car-loan applications the realized ROC AUC varies by about 0.007), while the estimate is an
    expectation over the chunk's predictions and varies far less (about 0.0016): a threshold
    from the realized spread sat near 0.94 and never saw the 2019 shift take the estimate from
    0.971 to 0.961. The estimate's own spread over partition-sized reference chunks is the
    natural variation of the statistic being judged. NannyML computes the values (from the
    result ``fit`` stored for the reference) and the thresholds (the metric's own ``Threshold``
    and limits); the reference rows of the result get the new thresholds too, so the plots draw
    the thresholds the alerts use."""
    import numpy as np
    from nannyml.thresholds import calculate_threshold_values

    result = getattr(estimator, "result", None)
    if result is None:
        return
    data = result.data
    for metric in estimator.metrics:
        name = metric.column_name
        if (name, "value") not in data.columns:
            continue
        values = data[(name, "value")].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size < 2:
            continue
        lower, upper = calculate_threshold_values(
            threshold=metric.threshold,
            data=values,
            lower_threshold_value_limit=metric.lower_threshold_value_limit,
            upper_threshold_value_limit=metric.upper_threshold_value_limit,
            metric_name=metric.display_name,
        )
        metric.lower_threshold_value, metric.upper_threshold_value = lower, upper
        data[(name, "lower_threshold")] = lower
        data[(name, "upper_threshold")] = upper
        if (name, "alert") in data.columns:
            data[(name, "alert")] = [bool(metric.alert(v)) for v in data[(name, "value")]]


def _estimated(model: MonitoredModel, chunker: Any) -> Any:
    import nannyml as nml

    metrics = list(model.kind.nannyml_metrics)
    thresholds = performance_thresholds(model)
    if model.kind.nannyml_estimator == "DLE":
        return nml.DLE(
            feature_column_names=model.features,
            y_pred="prediction",
            y_true=model.target,
            timestamp_column_name=model.timestamp,
            chunker=chunker,
            metrics=metrics,
            hyperparameters=dict(QUIET_LGBM),
            thresholds=thresholds,
        )
    return nml.CBPE(
        problem_type=model.kind.nannyml_problem_type,
        y_pred_proba=model.proba,
        y_pred="prediction",
        y_true=model.target,
        timestamp_column_name=model.timestamp,
        chunker=chunker,
        metrics=metrics,
        thresholds=thresholds,
    )


def _realized_calculator(model: MonitoredModel, chunker: Any) -> Any:
    import nannyml as nml

    return nml.PerformanceCalculator(
        problem_type=model.kind.nannyml_problem_type,
        y_pred_proba=model.kind.nannyml_proba(model.classes),
        y_pred="prediction",
        y_true=model.target,
        timestamp_column_name=model.timestamp,
        chunker=chunker,
        metrics=list(model.kind.nannyml_metrics),
        thresholds=performance_thresholds(model),
    )


def _missing(model: MonitoredModel, chunker: Any) -> Any:
    import nannyml as nml

    return nml.MissingValuesCalculator(
        column_names=model.features,
        normalize=True,
        timestamp_column_name=model.timestamp,
        chunker=chunker,
    )


def _unseen(model: MonitoredModel, chunker: Any) -> Any:
    import nannyml as nml

    return nml.UnseenValuesCalculator(
        column_names=model.categorical,
        normalize=True,
        timestamp_column_name=model.timestamp,
        chunker=chunker,
    )


_BUILDERS: dict[Calculator, Callable[[MonitoredModel, Any], Any]] = {
    Calculator.UNIVARIATE_DRIFT: _univariate,
    Calculator.MULTIVARIATE_DRIFT: _reconstruction,
    Calculator.DOMAIN_CLASSIFIER: _domain,
    Calculator.ESTIMATED_PERFORMANCE: _estimated,
    Calculator.REALIZED_PERFORMANCE: _realized_calculator,
    Calculator.MISSING_VALUES: _missing,
    Calculator.UNSEEN_VALUES: _unseen,
}


# --- the entry points ----------------------------------------------------------------------


def fit_suite(
    model: MonitoredModel,
    reference: pl.DataFrame,
    *,
    calculators: Iterable[Calculator] = ALL,
    reference_chunks: int = DEFAULT_REFERENCE_CHUNKS,
    reference_chunk_rows: int | None = None,
    reference_starts: Sequence[dt.datetime] | None = None,
    min_chunk_rows: int = MIN_CHUNK_ROWS,
    strict: bool = False,
) -> FittedSuite:
    """Fit the calculators on the champion's reference (its held-out test rows with features,
    event time, predictions and labels).

    With ``reference_starts`` (the starts of the dataset's partition windows over the
    reference), the reference is chunked like the monitored data: one chunk per window
    (:func:`~ml_assets.monitor.chunking.window_chunks`, windows under ``min_chunk_rows`` rows
    merged into a neighbour). Otherwise, or when that gives fewer than two chunks, it is cut
    into ``reference_chunks`` equal chunks (or, with ``reference_chunk_rows``, into as many
    chunks of that size as it holds), fewer when chunks would hold fewer than ``min_chunk_rows``
    rows. With fewer than two chunks thresholds are reported null. The domain classifier is
    fitted lazily (only when a partition runs it).
    """
    from ml_assets.monitor.chunking import window_chunks

    unknown = set(calculators) - ALL
    if unknown:
        raise ValueError(f"the suite has no calculators {sorted(c.value for c in unknown)}")
    if reference_chunk_rows is not None:
        reference_chunks = reference.height // max(reference_chunk_rows, 1)
    n_chunks = min(reference_chunks, reference.height // max(min_chunk_rows, 1))
    starts = [_naive_utc(s) for s in reference_starts] if reference_starts else None
    if starts and model.timestamp in reference.columns:
        times = _naive_utc_times(reference.get_column(model.timestamp))
        windows = len(window_chunks(times, starts, min_chunk_rows)) if times else 0
        if windows >= 2:
            n_chunks = windows
        else:
            starts = None
    else:
        starts = None
    suite = FittedSuite(
        model=model,
        calculators=frozenset(calculators),
        reference_rows=reference.height,
        reference_chunks=max(n_chunks, 1),
        thresholds=n_chunks >= 2,
        reference_starts=starts,
        min_chunk_rows=min_chunk_rows,
        strict=strict,
    )
    if not suite.thresholds:
        log.warning(
            "reference has %d rows: too few for thresholds (needs %d); reporting none",
            reference.height,
            2 * min_chunk_rows,
        )
    started = time.perf_counter()
    suite._reference, missing = to_nannyml_frame(reference, model)
    if missing:
        log.warning("the reference lacks features %s: monitored as all-null columns", missing)
    suite.seconds["convert:reference"] = time.perf_counter() - started
    for calculator in sorted(suite.calculators, key=_ORDER.index):
        if calculator is not Calculator.DOMAIN_CLASSIFIER:
            suite._fit(calculator)
    return suite


def _naive_utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is None else t.astimezone(dt.UTC).replace(tzinfo=None)


def _naive_utc_times(column: pl.Series) -> list[dt.datetime]:
    """A time column as sorted naive-UTC datetimes (nulls left out), as NannyML sees it."""
    if not isinstance(column.dtype, pl.Datetime):
        return []
    if column.dtype.time_zone is not None:
        column = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return column.drop_nulls().sort().to_list()


def run_suite(
    kind: ProblemKind,
    reference: pl.DataFrame,
    analysis: pl.DataFrame,
    *,
    features: list[str],
    categorical: list[str],
    classes: list[Any],
    target: str,
    timestamp: str,
    dataset: str,
    partition: str,
    champion_version: str,
    chunk_start: dt.datetime | None,
    chunk_end: dt.datetime | None,
    calculators: Iterable[Calculator] = ALL,
    domain_classifier: bool | None = None,
    reference_chunks: int = DEFAULT_REFERENCE_CHUNKS,
    reference_chunk_rows: int | None = None,
    strict: bool = False,
) -> pl.DataFrame:
    """Fit on ``reference`` and monitor ``analysis`` (one partition) in one call.

    See the module docstring for what is computed and how bad input is reported; to monitor
    many partitions against one champion, :func:`fit_suite` once and :meth:`FittedSuite.run`.
    """
    model = MonitoredModel(kind, features, categorical, classes, target, timestamp)
    suite = fit_suite(
        model,
        reference,
        calculators=calculators,
        reference_chunks=reference_chunks,
        reference_chunk_rows=reference_chunk_rows,
        strict=strict,
    )
    return suite.run(
        analysis,
        dataset=dataset,
        partition=partition,
        champion_version=champion_version,
        chunk_start=chunk_start,
        chunk_end=chunk_end,
        domain_classifier=domain_classifier,
    )


GAP_KEYS = ["dataset", "partition", "chunk_start", "chunk_end", "champion_version", "metric"]


def estimate_gap(results: pl.DataFrame) -> pl.DataFrame:
    """Estimated minus realized performance, per partition and metric.

    Columns: the partition's keys, ``metric``, ``estimator``, ``estimated``, ``realized``,
    ``gap`` (= estimated - realized; null until labels arrive), ``relative_gap`` (gap over the
    realized value's magnitude: comparable across metrics and units), ``label_coverage``. A later check
    compares ``gap`` with a bound once coverage is high enough: a large gap means the estimator
    (and so the label-free alerting) cannot be trusted for this model.
    """
    est = results.filter(pl.col("calculator") == Calculator.ESTIMATED_PERFORMANCE.value).select(
        *GAP_KEYS, pl.col("method").alias("estimator"), pl.col("value").alias("estimated")
    )
    real = results.filter(pl.col("calculator") == Calculator.REALIZED_PERFORMANCE.value).select(
        *GAP_KEYS, pl.col("value").alias("realized"), "label_coverage"
    )
    return est.join(real, on=GAP_KEYS, how="left", nulls_equal=True).with_columns(
        (pl.col("estimated") - pl.col("realized")).alias("gap"),
        ((pl.col("estimated") - pl.col("realized")) / pl.col("realized").abs()).alias(
            "relative_gap"
        ),
    )
