"""Monitoring assets: the champion's reference, and NannyML's results per data partition.

Thin wiring over :mod:`ml_assets.monitor.frames` (what is compared), :mod:`.suite` (NannyML),
:mod:`.operational` (the prediction log's traffic), :mod:`.plots` (NannyML's own plots, PNG and
HTML), :mod:`.incidents` and :mod:`.alerts`. NannyML is imported only when a monitoring
partition runs, never when the definitions load.

* ``<dataset>/reference``: the champion's held-out test window with labels and predictions,
  stored per model version (``v<version>``), so every result says which champion and which
  reference it was computed against.
* ``<dataset>/monitoring``: partitioned like the data, one run per partition (its checks are
  per partition). Each partition monitors the union of its batch predictions and the
  predictions served in its window against the reference, with the labels observed so far;
  re-running a partition later picks up labels that arrived since (realized performance and
  its coverage), leaving every other partition as it is.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ml_assets import settings
from ml_assets.dataset import Dataset
from ml_assets.features.windows import to_utc
from ml_assets.monitor.frames import (
    SOURCE,
    analysis_frame,
    prefer_served,
    reference_frame,
    with_labels,
)
from ml_assets.monitor.schema import Calculator, reference_id
from ml_assets.registry.tracking import CHAMPION, MlflowTracking
from ml_assets.storage import Lake
from ml_assets.train import core

DRIFT = "drift"
ESTIMATED = "estimated_performance"
GAP = "estimate_vs_realized"
QUALITY = "data_quality"


class MonitoringConfig(dg.Config):
    """How a monitoring partition is judged and reported (editable in the launchpad)."""

    gap_bound: float = 0.05
    """Warn when estimated and realized primary metric differ by more than this share of the
    realized value (0.05: 5%, so 0.05 of ROC AUC near 0.97, or 44 of an RMSE of 880: a bound in
    the metric's own units would mean nothing for an error measured in euros)."""
    min_label_coverage: float = 0.5
    """The gap is judged only once this share of the partition's rows has its label."""
    plots: bool = True
    """Render NannyML's plots (PNG for the UI, HTML reports): about 2 s per calculator."""
    domain_classifier: bool | None = None
    """Run NannyML's domain classifier (LightGBM, 5-fold CV: about 1-3 s per partition).
    Default: on for partitions of at most 50,000 rows."""
    labels_as_of: str | None = None
    """ISO datetime (naive = UTC): use only the labels observed before it. Default: every label
    ingested so far. The demo's replay sets the end of the partition, as if it were monitored
    when its week closed; re-running the partition later without it picks up late labels."""
    only_realized: bool = False
    """Recompute only the realized performance (with its label coverage, and so the estimated-
    versus-realized gap) from the labels observed so far, against the champion the partition
    was monitored with, keeping every other result: what the late-labels sensor asks when a
    label batch arrives. A partition not monitored yet, or whose predictions are now by another
    model version, is monitored in full instead."""


def _champion(mlflow: MlflowTracking, name: str) -> tuple[str, dict[str, str], core.Problem]:
    version = mlflow.alias_version(name, CHAMPION)
    if version is None:
        raise dg.Failure(f"{name} has no champion yet: train and promote one first")
    tags = mlflow.version_tags(name, version)
    return version, tags, core.Problem.from_json(tags["problem"])


def build_reference_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """The champion's reference: its held-out rows, labels and predictions, per version."""
    keys, name = dataset.keys, dataset.name

    @dg.asset(
        key=keys.reference,
        deps=[keys.champion, keys.training_set],
        **dataset.asset_args("reference"),
        kinds={"nannyml", "polars", "parquet"},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            f"The monitoring reference of the {name} champion: the rows of its held-out test "
            "window (from the boundary the promotion gate recorded on the model version) with "
            "their features, labels and the champion's predictions, stored per model version. "
            "NannyML computes every threshold from it."
        ),
    )
    def reference(
        context: dg.AssetExecutionContext, lake: Lake, mlflow: MlflowTracking
    ) -> dg.MaterializeResult:
        version, tags, problem = _champion(mlflow, name)
        part = f"v{version}"
        reused = lake.exists(keys.reference, part)
        if not reused:
            frame = lake.scan(keys.training_set, [None]).collect()
            from ml_assets.features.training_set import fingerprint

            trained_on = tags.get("training_set.fingerprint")
            if fingerprint(frame, dataset.spec.key) != trained_on:
                raise dg.Failure(
                    f"{name} v{version} was trained on training set {trained_on}, and the "
                    "training set has changed since: re-materialize the training set with the "
                    "champion's cutoff, or train and promote a new champion"
                )
            held_out = to_utc(dt.datetime.fromisoformat(tags["promotion.held_out_from"]))
            start, why = reference_start(dataset, frame, problem.event_time, held_out, tags)
            context.log.info(f"{name} v{version} reference: {why}")
            model = mlflow.load_model(name, version)
            ref = reference_frame(frame, problem, model, version, start, dataset.spec.key)
            lake.write(keys.reference, part, ref)
        ref = lake.scan(keys.reference, [part]).collect()
        context.log.info(f"{name} reference {reference_id(name, version)}: {ref.height} rows")
        return dg.MaterializeResult(
            metadata={
                "champion_version": version,
                "reference": reference_id(name, version),
                "dagster/row_count": ref.height,
                "held_out_from": tags.get("promotion.held_out_from", ""),
                "reference_from": str(ref.get_column(problem.event_time).min())
                if ref.height
                else "",
                "reused": reused,
                "lake_path": dg.MetadataValue.path(str(lake.path(keys.reference, part))),
            }
        )

    return reference


MIN_REFERENCE_WINDOWS = 4
"""Partition windows of held-out rows a reference needs to start at an incident rather than at
the whole held-out window: fewer would make thresholds from too few chunks."""


def reference_start(
    dataset: Dataset,
    training_set: pl.DataFrame,
    event_time: str,
    held_out: dt.datetime,
    tags: dict[str, str],
) -> tuple[dt.datetime, str]:
    """Where a champion's reference starts, and why.

    The held-out window's start, unless the model was trained because of an incident
    (:data:`~ml_assets.registry.tracking.REFERENCE_FROM_TAG`): then the incident's start, when
    the held-out rows from there fill at least :data:`MIN_REFERENCE_WINDOWS` partition windows.
    A retrain after a shift is judged against the new regime: a reference that also held the
    weeks before the shift would make the new regime itself look like drift."""
    from ml_assets.registry.tracking import REFERENCE_FROM_TAG

    whole = (held_out, f"the held-out window from {held_out:%Y-%m-%d}")
    raw = tags.get(REFERENCE_FROM_TAG)
    if not raw:
        return whole
    incident = to_utc(dt.datetime.fromisoformat(raw))
    if incident <= held_out:
        return whole
    held = training_set.filter(pl.col(event_time) >= incident)
    windows = len(reference_starts(dataset, held, event_time, with_rows=True))
    if windows < MIN_REFERENCE_WINDOWS:
        return (
            held_out,
            f"the held-out window from {held_out:%Y-%m-%d}: the incident's window from "
            f"{incident:%Y-%m-%d} holds {windows} partitions of held-out rows "
            f"(fewer than {MIN_REFERENCE_WINDOWS})",
        )
    return (
        incident,
        f"the held-out rows from {incident:%Y-%m-%d}, where the incident this model was trained "
        f"for began ({windows} partitions; the held-out window starts {held_out:%Y-%m-%d})",
    )


def _scan_existing(lake: Lake, key: dg.AssetKey, partitions: list[str]) -> pl.DataFrame | None:
    present = [p for p in partitions if lake.exists(key, p)]
    return lake.scan(key, present).collect() if present else None


@dataclass(frozen=True)
class Analysis:
    """A partition's rows to monitor and what was read to get them."""

    rows: pl.DataFrame
    """Batch and served predictions with the labels observed so far, one row per event."""
    served: pl.DataFrame
    """The prediction log's rows of the partition's events, as logged (operational summary)."""
    superseded: int
    """Batch rows not monitored because the same event was also served."""
    unreadable: list[tuple[Any, str]]
    """Prediction-log segments (local paths or object-store paths) that could not be read, with
    the reason."""


def read_analysis(
    dataset: Dataset,
    lake: Lake,
    problem: core.Problem,
    partition: str,
    labels_as_of: dt.datetime | None = None,
) -> Analysis:
    """A partition's batch and served predictions (served rows by the event they predict) with
    the labels observed so far (before ``labels_as_of`` when given)."""
    from ml_assets.serve.prediction_log import read_served

    keys, spec, contract = dataset.keys, dataset.spec, dataset.contract
    start, end = dataset.partitions.utc_window(partition)
    batch = _scan_existing(lake, keys.predictions, [partition])
    feats = _scan_existing(lake, keys.features, [partition])
    served = read_served(
        dataset.name,
        start,
        end,
        problem.event_time,
        root=settings.current().prediction_log_path,
    )
    log_rows = served.rows if served.rows.height else None
    rows = analysis_frame(problem, spec.key, batch, feats, log_rows)
    rows, superseded = prefer_served(rows, spec.key, problem.event_time)
    labels = _scan_existing(lake, keys.validated["labels"], dataset.partitions.keys())
    lab = contract.labels
    labelled = with_labels(
        rows, labels, spec.key, lab.key_columns, contract.target, lab.observed_at, labels_as_of
    )
    return Analysis(labelled, served.rows, superseded, served.unreadable)


_FITTED: dict[tuple[str, str], Any] = {}


def reference_starts(
    dataset: Dataset, reference: pl.DataFrame, event_time: str, with_rows: bool = False
) -> list[dt.datetime]:
    """The starts (UTC) of the dataset's partition windows over the reference's time range:
    where the suite cuts the reference into chunks shaped like the monitored partitions
    (``with_rows``: only the windows holding at least one of its rows)."""
    import bisect

    if event_time not in reference.columns or reference.height == 0:
        return []
    times = reference.get_column(event_time).drop_nulls()
    if times.len() == 0:
        return []
    first, last = to_utc(times.min()), to_utc(times.max())
    keys = dataset.partitions.overlapping(first, last + dt.timedelta(microseconds=1))
    starts = [dataset.partitions.utc_window(k)[0] for k in keys]
    if not with_rows:
        return starts
    used = {bisect.bisect_right(starts, to_utc(t)) - 1 for t in times.to_list()}
    return [s for i, s in enumerate(starts) if i in used]


def fitted_suite(
    dataset: Dataset, version: str, problem: core.Problem, reference: pl.DataFrame
) -> Any:
    """The suite fitted on a champion's reference, once per process and champion: drift leaves
    out the feature spec's exempt features, and the reference is chunked by the dataset's
    partition windows (thresholds from chunks shaped like the partitions they judge)."""
    from ml_assets.monitor.suite import MonitoredModel, fit_suite

    key = (dataset.name, version)
    if key not in _FITTED:
        _FITTED.clear()
        aggregates = [a.name for a in dataset.spec.aggregates]
        model = MonitoredModel.from_problem(problem, dataset.spec.drift_exempt, aggregates)
        starts = reference_starts(dataset, reference, problem.event_time)
        _FITTED[key] = fit_suite(model, reference, reference_starts=starts)
    return _FITTED[key]


def check_results(
    results: pl.DataFrame, primary: str, config: MonitoringConfig, unreadable: int = 0
) -> list[dg.AssetCheckResult]:
    """The four monitoring checks of one partition, from its results rows (and the number of
    prediction-log segments that could not be read, a data-quality failure)."""
    from ml_assets.monitor.suite import estimate_gap

    def alerts(*calculators: Calculator, metric: str | None = None) -> pl.DataFrame:
        rows = results.filter(pl.col("calculator").is_in([c.value for c in calculators]))
        if metric is not None:
            rows = rows.filter(pl.col("metric") == metric)
        return rows.filter(pl.col("alert").fill_null(False))

    def describe(rows: pl.DataFrame) -> str | None:
        if rows.height == 0:
            return None
        parts = [
            f"{r['column'] or r['method']} {r['metric']} {r['value']:.4g}"
            if r["value"] is not None
            else f"{r['column'] or r['method']} {r['metric']}"
            for r in rows.head(8).iter_rows(named=True)
        ]
        more = f" (+{rows.height - 8} more)" if rows.height > 8 else ""
        return "; ".join(parts) + more

    from ml_assets.monitor.incidents import drift_alerts

    drift, lone = drift_alerts(results)
    estimated = alerts(Calculator.ESTIMATED_PERFORMANCE, metric=_nannyml_metric(primary))
    quality = alerts(Calculator.MISSING_VALUES, Calculator.UNSEEN_VALUES)
    gaps = estimate_gap(results)
    judged = gaps.filter(
        pl.col("gap").is_not_null() & (pl.col("label_coverage") >= config.min_label_coverage)
    )
    wide = judged.filter(pl.col("relative_gap").abs() > config.gap_bound)
    warn, error = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR
    gap_text = "; ".join(
        f"{r['metric']} estimated {r['estimated']:.4g} vs realized {r['realized']:.4g} "
        f"({r['relative_gap']:+.1%}, bound {config.gap_bound:.0%})"
        for r in wide.iter_rows(named=True)
    )
    verdicts = [
        (
            DRIFT,
            drift,
            warn,
            "; ".join(
                t
                for t in (
                    describe(drift),
                    f"one method only, not counted: {describe(lone)}" if lone.height else None,
                )
                if t
            )
            or None,
            {"alerts": drift.height, "single_method_alerts": lone.height},
        ),
        (ESTIMATED, estimated, error, describe(estimated), {"alerts": estimated.height}),
        (
            GAP,
            wide,
            warn,
            gap_text or (None if judged.height else "not judged yet: too few labels"),
            {"bound": config.gap_bound, "judged": judged.height},
        ),
        (
            QUALITY,
            quality,
            warn,
            "; ".join(
                t
                for t in (
                    describe(quality),
                    f"{unreadable} prediction-log segments unreadable (see the run log)"
                    if unreadable
                    else None,
                )
                if t
            )
            or None,
            {"alerts": quality.height, "unreadable_log_segments": unreadable},
        ),
    ]
    return [
        dg.AssetCheckResult(
            check_name=name,
            passed=failing.height == 0 and not (name == QUALITY and unreadable),
            severity=severity,
            description=description,
            metadata=metadata,
        )
        for name, failing, severity, description, metadata in verdicts
    ]


def _nannyml_metric(primary: str) -> str:
    """NannyML's name of a primary metric (``macro_f1`` is NannyML's macro-averaged ``f1``)."""
    return {"macro_f1": "f1"}.get(primary, primary)


def _plots_markdown(files: dict[Any, Any]) -> str:
    import base64

    parts = []
    for calculator, f in files.items():
        if f.png.exists():
            data = base64.b64encode(f.png.read_bytes()).decode()
            parts.append(
                f"**{calculator.value}**\n\n![{calculator.value}](data:image/png;base64,{data})"
            )
    return "\n\n".join(parts)


def build_monitoring_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """NannyML's drift, estimated and realized performance and data quality per partition."""
    keys, name, kind = dataset.keys, dataset.name, dataset.kind
    partitions = dataset.partitions

    def spec(check: str, description: str) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            check,
            asset=keys.monitoring,
            description=description,
            partitions_def=partitions.definition,
        )

    @dg.asset(
        key=keys.monitoring,
        partitions_def=partitions.definition,
        deps=[
            keys.predictions,
            keys.prediction_log,
            keys.features,
            keys.reference,
            dg.AssetDep(keys.validated["labels"], partition_mapping=dg.AllPartitionMapping()),
        ],
        **dataset.asset_args("monitoring"),
        kinds={"nannyml", "polars", "parquet"},
        check_specs=[
            spec(DRIFT, "No univariate or multivariate drift alert (NannyML's thresholds)."),
            spec(
                ESTIMATED,
                f"Estimated {kind.primary_metric} ({kind.nannyml_estimator}) within its threshold.",
            ),
            spec(GAP, "Estimated and realized primary metric agree within the bound."),
            spec(QUALITY, "No missing-value or unseen-value rate alert."),
        ],
        description=(
            f"NannyML over the {name} predictions of each partition (batch and served, tagged "
            "by source) against the champion's reference: univariate and multivariate drift, "
            f"{kind.nannyml_estimator}-estimated and realized performance (with label coverage),"
            " missing and unseen values, and the prediction log's traffic. A tidy results "
            "table per partition, NannyML's plots and an HTML report."
        ),
    )
    def monitoring(
        context: dg.AssetExecutionContext,
        config: MonitoringConfig,
        lake: Lake,
        mlflow: MlflowTracking,
    ) -> dg.MaterializeResult:
        from ml_assets.monitor.operational import operational_rows
        from ml_assets.monitor.plots import plot_results

        pk = context.partition_key
        start, end = partitions.utc_window(pk)
        as_of = (
            to_utc(dt.datetime.fromisoformat(config.labels_as_of)) if config.labels_as_of else None
        )
        version, problem, read, keep = _what_to_monitor(
            context, dataset, lake, mlflow, config.only_realized, as_of
        )
        if not lake.exists(keys.reference, f"v{version}"):
            raise dg.Failure(f"no reference of {name} v{version}: materialize {keys.reference}")
        ref = lake.scan(keys.reference, [f"v{version}"]).collect()
        analysis, served = read.rows, read.served
        for path, reason in read.unreadable:
            context.log.error(f"prediction log segment {path} not monitored: {reason}")
        suite = fitted_suite(dataset, version, problem, ref)
        where = {"dataset": name, "partition": pk, "champion_version": version}
        window = {"chunk_start": start, "chunk_end": end}
        if keep is not None:
            only = [Calculator.REALIZED_PERFORMANCE]
            realized = suite.run(analysis, **where, **window, only=only)
            results = pl.concat([keep, realized], how="vertical_relaxed")
        else:
            results = pl.concat(
                [
                    suite.run(
                        analysis, **where, **window, domain_classifier=config.domain_classifier
                    ),
                    operational_rows(served, **where, **window),
                ],
                how="vertical_relaxed",
            )
        lake.write(keys.monitoring, pk, results)
        report_dir = settings.current().monitoring_path / name / pk
        files = plot_results(suite.results, report_dir, png=config.plots) if config.plots else {}
        if keep is not None:  # the other calculators' plots of the earlier run still hold
            files = {**_existing_plots(report_dir), **files}
        checks = check_results(results, kind.primary_metric, config, len(read.unreadable))
        _alert(context, dataset, lake, report_dir)
        counts = dict(analysis.get_column(SOURCE).value_counts().iter_rows())
        return dg.MaterializeResult(
            metadata={
                "champion_version": version,
                "reference": reference_id(name, version),
                "rows": analysis.height,
                "rows_by_source": dg.MetadataValue.json(counts),
                "batch_rows_superseded_by_served": read.superseded,
                "unreadable_log_segments": dg.MetadataValue.json(
                    [{"path": str(p), "reason": r} for p, r in read.unreadable]
                ),
                "label_coverage": round(
                    1
                    - analysis.get_column(dataset.contract.target).null_count()
                    / max(analysis.height, 1),
                    4,
                ),
                "alerts": int(results.get_column("alert").fill_null(False).sum()),
                "recomputed": "realized_performance" if keep is not None else "all",
                "drift_leaves_out": dg.MetadataValue.json(
                    {
                        f: why
                        for f, why in dataset.spec.drift_exempt.items()
                        if f in problem.features
                    }
                ),
                "domain_classifier_also_leaves_out": dg.MetadataValue.json(
                    list(suite.model.classifier_exempt)
                ),
                "report": dg.MetadataValue.path(str(report_dir)),
                "plots": dg.MetadataValue.md(_plots_markdown(files)),
            },
            check_results=checks,
        )

    return monitoring


def _what_to_monitor(
    context: dg.AssetExecutionContext,
    dataset: Dataset,
    lake: Lake,
    mlflow: MlflowTracking,
    only_realized: bool,
    as_of: dt.datetime | None,
) -> tuple[str, core.Problem, Analysis, pl.DataFrame | None]:
    """The model version to monitor the partition against, its problem, the partition's rows
    and, when only its realized performance is recomputed, the earlier results to keep.

    In full: the champion. Only realized (:attr:`MonitoringConfig.only_realized`): the version
    the partition was monitored with, so estimate and realization describe one model."""
    name, key, pk = dataset.name, dataset.keys.monitoring, context.partition_key
    version, _, problem = _champion(mlflow, name)
    if only_realized and lake.exists(key, pk):
        previous = lake.scan(key, [pk]).collect()
        monitored = previous.get_column("champion_version").drop_nulls().first()
        earlier = problem
        if monitored is not None and monitored != version:
            earlier = core.Problem.from_json(mlflow.version_tags(name, monitored)["problem"])
        read = read_analysis(dataset, lake, earlier, pk, labels_as_of=as_of)
        keep = _kept_results(context, previous, read.rows, monitored)
        if keep is not None and monitored is not None:
            return monitored, earlier, read, keep
    elif only_realized:
        context.log.info(f"{pk} has no monitoring results yet: monitoring it in full")
    return version, problem, read_analysis(dataset, lake, problem, pk, labels_as_of=as_of), None


def _existing_plots(folder: Path) -> dict[Calculator, Any]:
    """The plots an earlier run of a partition left in its report folder, per calculator."""
    from ml_assets.monitor.plots import PlotFiles

    return {
        c: PlotFiles(folder / f"{c.value}.png", folder / f"{c.value}.html")
        for c in Calculator
        if (folder / f"{c.value}.html").exists()
    }


def _kept_results(
    context: Any, previous: pl.DataFrame, analysis: pl.DataFrame, version: str | None
) -> pl.DataFrame | None:
    """The results of a partition to keep when only its realized performance is recomputed
    (every row but the realized ones), or None when the partition must be monitored in full:
    it has no results yet, or its predictions are no longer all by the model it was monitored
    with (a realized performance of other predictions would not match its estimate)."""
    from ml_assets.monitor.frames import MODEL_VERSION

    if version is None or previous.height == 0:
        context.log.info("no earlier results of this partition: monitoring it in full")
        return None
    versions = set(analysis.get_column(MODEL_VERSION).drop_nulls().unique().to_list())
    if versions - {version}:
        context.log.warning(
            f"the partition's predictions are now by model versions {sorted(versions)}, not "
            f"only v{version} it was monitored with: monitoring it in full"
        )
        return None
    realized = Calculator.REALIZED_PERFORMANCE.value
    return previous.filter(pl.col("calculator") != realized)


def _alert(context: Any, dataset: Dataset, lake: Lake, report_dir: Path) -> None:
    """Send the dataset's ongoing incidents to the alert sinks (never fails the asset). A lone
    method's univariate alert is no incident (:func:`~ml_assets.monitor.incidents.counted`):
    it is reported in the ``drift`` check, not paged."""
    from ml_assets.monitor.alerts import send_alerts
    from ml_assets.monitor.incidents import find_incidents
    from ml_assets.monitor.sensors import read_results

    try:
        incidents = [i for i in find_incidents(read_results(lake, dataset)) if i.ongoing]
    except Exception as exc:  # reading old partitions must not fail this one
        context.log.error(f"monitoring incidents of {dataset.name} not computed: {exc!r}")
        return
    send_alerts(incidents, context.log, report_url=str(report_dir))


def monitoring_definitions(dataset: Dataset) -> dg.Definitions:
    """The dataset's reference, monitoring and monitoring summary assets (resources: lake,
    mlflow)."""
    from ml_assets.monitor.summary import build_summary_asset

    return dg.Definitions(
        assets=[
            build_reference_asset(dataset),
            build_monitoring_asset(dataset),
            build_summary_asset(dataset),
        ]
    )
