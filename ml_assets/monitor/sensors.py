"""The retrain sensor: a sustained performance incident launches the dataset's train job.

On each tick, :func:`build_retrain_sensor`'s sensor reads the dataset's monitoring results from
the lake (:func:`read_results`: the partition files of ``<dataset>/monitoring``), finds the
retrain candidates (:func:`~ml_assets.monitor.incidents.retrain_candidates`: estimated or
realized performance alerting for at least N partitions in a row) and watches the labels
arriving for them: a challenger learns the new regime only from labelled rows, and labels come
late (weeks, for a loan). Once the share of the rows of the incident's first N partitions with
a label (``ML_ASSETS_RETRAIN_MIN_LABEL_COVERAGE``, 0.5) has arrived, it requests one run of
``<dataset>_train``, with ``run_key`` = the incident id and the training set's cutoff at the
monitoring clock: the end of the newest monitored partition (labels observed after it do not
count, so a replay of history behaves as it would have live).

The cursor (JSON: the incident ids already handled) is stored by Dagster and survives a
restart; ``run_key`` makes a second request for the same incident a no-op even without it.
Imports nothing heavy: the code location loads it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import dagster as dg
import polars as pl

from ml_assets import settings
from ml_assets.dataset import Dataset
from ml_assets.features.assets import TrainingSetConfig
from ml_assets.monitor.frames import observed_before
from ml_assets.monitor.incidents import Incident, retrain_candidates
from ml_assets.monitor.schema import PERFORMANCE, RESULTS_SCHEMA, Calculator, empty_results
from ml_assets.storage import Lake

CURSOR_LIMIT = 500
"""Most incident ids the cursor keeps (the oldest are forgotten; run keys still dedupe)."""
TAG_PREFIX = "ml_assets"
INCIDENT_FIRST_PARTITION_TAG = f"{TAG_PREFIX}/incident_first_partition"
"""Run tag of a retrain run: the first partition of the incident that launched it."""


def monitored_partitions(lake: Lake, dataset: Dataset) -> list[str]:
    """The dataset's partitions that have a monitoring results file, in partition order."""
    folder = lake.path(dataset.keys.monitoring, None).parent
    if not folder.exists():
        return []
    present = {
        p.name.removesuffix(".parquet") for p in folder.iterdir() if p.name.endswith(".parquet")
    }
    ordered: list[str] = dataset.partitions.keys()
    return [key for key in ordered if key in present]


def read_results(lake: Lake, dataset: Dataset) -> pl.DataFrame:
    """Every monitoring partition of the dataset in the lake, as one results table."""
    partitions = monitored_partitions(lake, dataset)
    if not partitions:
        return empty_results()
    frame = lake.scan(dataset.keys.monitoring, partitions).collect()
    columns = [
        pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
        for c, t in RESULTS_SCHEMA.items()
    ]
    return frame.select(columns).filter(pl.col("dataset") == dataset.name)


def training_op_name(dataset: Dataset) -> str:
    """The op Dagster makes of the training-set asset (``<dataset>__training_set``)."""
    return dataset.keys.training_set.to_python_identifier()


def retrain_run_config(
    dataset: Dataset, cutoff: dt.datetime, window_days: float | None
) -> dict[str, Any]:
    """Run config of the train job: the training set's cutoff (UTC, ISO) and, when given, its
    window ``window_days`` long."""
    config: dict[str, Any] = {"cutoff": cutoff.isoformat()}
    if window_days is not None:
        config["window_days"] = float(window_days)
    return {"ops": {training_op_name(dataset): {"config": config}}}


def monitoring_clock(dataset: Dataset, results: pl.DataFrame) -> dt.datetime:
    """The end of the newest monitored partition: "now", as far as the results know."""
    newest = max(results.get_column("partition").unique().to_list())
    return dataset.partitions.utc_window(newest)[1]


def label_coverage(
    lake: Lake, dataset: Dataset, partitions: list[str], as_of: dt.datetime
) -> tuple[int, int]:
    """(rows with a label observed before ``as_of``, rows) of the events of ``partitions``,
    from the feature table and the validated labels in the lake."""
    key, labels = dataset.spec.key, dataset.contract.labels
    present = [p for p in partitions if lake.exists(dataset.keys.features, p)]
    if not present:
        return 0, 0
    rows = lake.scan(dataset.keys.features, present).select(key).collect()
    every: list[str] = dataset.partitions.keys()
    label_parts = [p for p in every if lake.exists(dataset.keys.validated["labels"], p)]
    if not label_parts or rows.height == 0:
        return 0, rows.height
    scan = lake.scan(dataset.keys.validated["labels"], label_parts)
    arrived = (
        scan.filter(observed_before(scan, labels.observed_at, as_of))
        .select([pl.col(k).alias(e) for k, e in zip(labels.key_columns, key, strict=True)])
        .unique()
        .collect()
    )
    return rows.join(arrived, on=key, how="semi").height, rows.height


def incident_partitions(dataset: Dataset, incident: Incident, n: int) -> list[str]:
    """The first ``n`` partitions of an incident, in partition order."""
    keys = dataset.partitions.keys()
    first = keys.index(incident.first_partition)
    return keys[first : first + n]


def incident_tags(incident: Incident) -> dict[str, str]:
    """Tags of a retrain run, naming the incident that launched it."""
    tags = {
        "incident": incident.id,
        "trigger": "retrain_sensor",
        "calculator": incident.calculator,
        "metric": incident.metric,
        "incident_first_partition": incident.first_partition,
        "incident_last_partition": incident.last_partition,
        "incident_partitions": str(incident.length),
        "champion_version": incident.champion_version or "",
    }
    return {f"{TAG_PREFIX}/{k}": v for k, v in tags.items()}


def parse_cursor(cursor: str | None) -> list[str]:
    """The handled incident ids of a cursor (oldest first); a bad cursor counts as empty."""
    if not cursor:
        return []
    try:
        data = json.loads(cursor)
    except ValueError:
        return []
    handled = data.get("handled", []) if isinstance(data, dict) else []
    return [str(h) for h in handled]


def dump_cursor(handled: Iterable[str]) -> str:
    ids = list(dict.fromkeys(handled))[-CURSOR_LIMIT:]
    return json.dumps({"handled": ids})


def judged(incidents: list[Incident], primary: str) -> list[Incident]:
    """The incidents a retrain may answer: of the performance calculators only those of the
    primary metric (NannyML's name; what the ``estimated_performance`` check judges), of the
    others every one."""
    performance = {c.value for c in PERFORMANCE}
    return [i for i in incidents if i.calculator not in performance or i.metric == primary]


def episodes(incidents: list[Incident]) -> list[tuple[Incident, list[Incident]]]:
    """Incidents grouped into episodes: incidents whose partition ranges overlap (estimated
    and realized performance, or reconstruction error, alerting through the same weeks) are
    one shift, answered by one retrain. Each episode is (the incident that began first, the
    others), in order of first partition."""
    ordered = sorted(incidents, key=lambda i: (i.first_partition, i.id))
    out: list[tuple[Incident, list[Incident]]] = []
    end = ""
    for incident in ordered:
        if out and incident.first_partition <= end:
            out[-1][1].append(incident)
            end = max(end, incident.last_partition)
        else:
            out.append((incident, []))
            end = incident.last_partition
    return out


def build_retrain_sensor(
    dataset: Dataset,
    *,
    consecutive: int | None = None,
    calculators: Iterable[Calculator | str] | None = None,
    window_days: float | None = None,
    min_label_coverage: float | None = None,
    ongoing_only: bool = True,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """``<dataset>_retrain_sensor``: one ``<dataset>_train`` run per sustained incident.

    ``consecutive``: alerting partitions in a row before a retrain (default
    ``ML_ASSETS_RETRAIN_CONSECUTIVE``, 2). ``window_days``: the training window (default the
    training set's own). ``min_label_coverage``: the share of the rows of the incident's first
    N partitions whose labels must have arrived first (default
    ``ML_ASSETS_RETRAIN_MIN_LABEL_COVERAGE``, 0.5); until then each tick says it is waiting.
    ``ongoing_only``: an incident that has already recovered (a later
    partition of its metric no longer alerts) is marked handled without a run: its regime has
    passed, as happens when months of monitoring are backfilled at once.
    """
    n = consecutive if consecutive is not None else settings.current().retrain_consecutive
    if n < 1:
        raise ValueError(f"consecutive must be at least 1, not {n}")
    days = window_days if window_days is not None else TrainingSetConfig().window_days
    if calculators is None:
        calculators = dataset.contract.monitoring.retrain_on or PERFORMANCE
    wanted = tuple(str(c) for c in calculators)

    @dg.sensor(
        name=f"{dataset.name}_retrain_sensor",
        job_name=dataset.jobs.train,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Retrains {dataset.name} when {' or '.join(wanted)} has alerted for {n} monitoring "
            f"partitions in a row: one {dataset.jobs.train} run per incident (run key = incident "
            "id), its training set cut off at the end of the incident's last partition."
        ),
    )
    def retrain_sensor(context: dg.SensorEvaluationContext, lake: Lake) -> dg.SensorResult:
        handled = parse_cursor(context.cursor)
        seen = set(handled)
        results = read_results(lake, dataset)
        if results.is_empty():
            return dg.SensorResult(skip_reason=f"no monitoring results of {dataset.name} yet")
        coverage = (  # read at each tick: the setting may change while the daemon runs
            min_label_coverage
            if min_label_coverage is not None
            else settings.current().retrain_min_label_coverage
        )
        requests: list[dg.RunRequest] = []
        waiting: list[str] = []
        clock = monitoring_clock(dataset, results)
        candidates = retrain_candidates(results, consecutive=n, calculators=wanted)
        for incident, same in episodes(judged(candidates, dataset.kind.nannyml_metrics[0])):
            if incident.id in seen:
                continue
            if same:  # other metrics alerting over the same partitions: one retrain for all
                seen.update(i.id for i in same)
                handled.extend(i.id for i in same)
            if ongoing_only and not (incident.ongoing or any(i.ongoing for i in same)):
                seen.add(incident.id)
                handled.append(incident.id)
                context.log.info(f"{incident.id}: recovered by {incident.last_partition}; no run")
                continue
            labelled, rows = label_coverage(
                lake, dataset, incident_partitions(dataset, incident, n), clock
            )
            share = labelled / rows if rows else 0.0
            if coverage > 0 and share < coverage:
                waiting.append(
                    f"{incident.id}: waiting for labels ({labelled:,} of {rows:,} rows of its "
                    f"first {n} partitions labelled by {clock:%Y-%m-%d}, "
                    f"{share:.0%} < {coverage:.0%})"
                )
                continue
            seen.add(incident.id)
            handled.append(incident.id)
            context.log.info(
                f"{incident.id}: {incident.length} partitions alerting, {share:.0%} of its first "
                f"{n} partitions labelled; requesting {dataset.jobs.train} cut off at {clock}"
            )
            tags = {
                **incident_tags(incident),
                f"{TAG_PREFIX}/label_coverage": f"{share:.4f}",
                f"{TAG_PREFIX}/cutoff": clock.isoformat(),
            }
            if same:
                tags[f"{TAG_PREFIX}/same_episode"] = ",".join(i.id for i in same)[:4000]
            requests.append(
                dg.RunRequest(
                    run_key=incident.id,
                    run_config=retrain_run_config(dataset, clock, days),
                    tags=tags,
                )
            )
        for line in waiting:
            context.log.info(line)
        cursor = dump_cursor(handled)
        if not requests:
            reason = "; ".join(waiting) or f"no new sustained incident of {dataset.name} (N={n})"
            return dg.SensorResult(skip_reason=reason, cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return retrain_sensor


# --- late labels -----------------------------------------------------------------------------

LATE_LABELS_PAGE = 500
"""Label materializations read per page of a late-labels tick."""


def partitions_with_labels(label_keys: pl.DataFrame, events: dict[str, pl.DataFrame]) -> list[str]:
    """The partitions (keys of ``events``: each partition's event keys) holding at least one
    event whose key is in ``label_keys`` (same column names), in the order given."""
    if label_keys.height == 0:
        return []
    return [
        p
        for p, keys in events.items()
        if keys.height and keys.join(label_keys, on=list(keys.columns), how="semi").height
    ]


def incomplete_partitions(results: pl.DataFrame) -> list[str]:
    """Monitored partitions whose realized performance has not yet seen every label (coverage
    below 1, or no realized row), in partition order."""
    realized = results.filter(pl.col("calculator") == Calculator.REALIZED_PERFORMANCE.value)
    complete = set(
        realized.group_by("partition")
        .agg(pl.col("label_coverage").min())
        .filter(pl.col("label_coverage") >= 1.0)
        .get_column("partition")
        .to_list()
    )
    return [
        p for p in results.get_column("partition").unique(maintain_order=True) if p not in complete
    ]


def late_labels_run_config(dataset: Dataset) -> dict[str, Any]:
    """Run config of a monitoring run that recomputes only the realized performance."""
    op = dataset.keys.monitoring.to_python_identifier()
    return {"ops": {op: {"config": {"only_realized": True}}}}


def parse_after(cursor: str | None) -> int | None:
    """The storage id of the last label materialization a late-labels tick handled."""
    try:
        after = json.loads(cursor).get("after") if cursor else None
    except (ValueError, AttributeError):
        return None
    return int(after) if isinstance(after, int) else None


def build_late_labels_sensor(
    dataset: Dataset,
    *,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """``<dataset>_late_labels_sensor``: when a batch of labels lands (a materialization of
    the validated labels), re-monitor only the partitions it labels, and only their realized
    performance.

    Labels come late and are partitioned by when they were observed, so a batch may label
    events of many earlier partitions. Each tick reads the label materializations after its
    cursor (their storage ids), the keys of those label partitions, and the event keys of
    the monitored partitions whose realized performance has not seen every label yet; a
    partition that holds one of the new keys and has not been monitored since the batch
    landed gets one ``<dataset>_monitor`` run with ``only_realized`` (run key: partition and
    the batch's storage id). Drift, estimated performance and every other partition stay as
    they are. The cursor is the newest storage id handled; it survives a restart."""
    keys, name = dataset.keys, dataset.name
    labels_key = keys.validated["labels"]
    lab = dataset.contract.labels

    @dg.sensor(
        name=f"{name}_late_labels_sensor",
        job_name=dataset.jobs.monitor,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"When new {name} labels land, recomputes the realized performance of the "
            "monitoring partitions they label (and only those), keeping their other results."
        ),
    )
    def late_labels_sensor(context: dg.SensorEvaluationContext, lake: Lake) -> dg.SensorResult:
        after = parse_after(context.cursor)
        batches: dict[str, int] = {}  # labels partition -> newest storage id
        newest, page = after, None
        while True:
            found = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=labels_key, after_storage_id=after),
                limit=LATE_LABELS_PAGE,
                cursor=page,
                ascending=True,
            )
            for record in found.records:
                if record.partition_key is not None:
                    batches[record.partition_key] = record.storage_id
                newest = max(newest or 0, record.storage_id)
            if not found.has_more:
                break
            page = found.cursor
        cursor = json.dumps({"after": newest}) if newest is not None else context.cursor
        if not batches:
            return dg.SensorResult(skip_reason=f"no new {name} labels", cursor=cursor)
        results = read_results(lake, dataset)
        candidates = incomplete_partitions(results) if not results.is_empty() else []
        present = [p for p in batches if lake.exists(labels_key, p)]
        if not candidates or not present:
            return dg.SensorResult(
                skip_reason=f"{len(batches)} new label partitions; no monitored partition "
                "of " + name + " waits for labels",
                cursor=cursor,
            )
        spec_key = dataset.spec.key
        new_keys = (
            lake.scan(labels_key, present)
            .select([pl.col(k).alias(e) for k, e in zip(lab.key_columns, spec_key, strict=True)])
            .unique()
            .collect()
        )
        events = {
            p: lake.scan(keys.features, [p]).select(spec_key).collect()
            for p in candidates
            if lake.exists(keys.features, p)
        }
        since = max(batches.values())  # monitored after every new batch: nothing missed
        requests = []
        for partition in partitions_with_labels(new_keys, events):
            redone = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=keys.monitoring, asset_partitions=[partition], after_storage_id=since
                ),
                limit=1,
            )
            if redone.records:
                continue  # monitored in full after the labels landed
            requests.append(
                dg.RunRequest(
                    run_key=f"late_labels:{partition}:{newest}",
                    partition_key=partition,
                    run_config=late_labels_run_config(dataset),
                    tags={
                        f"{TAG_PREFIX}/trigger": "late_labels_sensor",
                        f"{TAG_PREFIX}/label_partitions": ",".join(sorted(batches)),
                    },
                )
            )
        if not requests:
            return dg.SensorResult(
                skip_reason=f"{len(batches)} new label partitions label no monitored "
                f"partition of {name} that waits for them",
                cursor=cursor,
            )
        context.log.info(
            f"{len(batches)} new label partitions: recomputing the realized performance of "
            + ", ".join(r.partition_key or "" for r in requests)
        )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return late_labels_sensor
