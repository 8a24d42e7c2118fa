"""The demo's replay: a dataset's later half as if it arrived live, partition by partition.

``make demo`` runs it for every dataset whose contract says ``demo: {replay: true}``. The
champion is trained on the first half of the data only (the training set's cutoff at the
replay's first partition); then, for each later partition in order, as a live deployment would
see it:

1. **served**: a share of the partition's rows goes through the real Bento over HTTP
   (``POST /v1/predict``: the feature rows with their entity key and event time, so the
   prediction log records which event each prediction is for); the rest is **batch-scored**
   by the ``predictions`` asset. Batch scoring runs once per champion over the partitions still
   ahead, which gives the predictions weekly scoring would: each partition is scored by the
   champion of its time.
2. **monitored**: the ``monitoring`` asset for that one partition (its own run, its checks),
   with the labels observed by the end of the partition (``labels_as_of``): a label that
   arrived later was not known yet.
3. **the retrain sensor** is evaluated, as the daemon evaluates it under ``dagster dev``, and
   the run it requests is executed with the sensor's tags (``dagster/sensor_name``,
   ``dagster/run_key``): the train job, whose promotion gate decides. On promotion the new
   champion's Bento (built by that run) replaces the served one, and later partitions are
   scored and monitored against the new champion and its reference.

Everything is real: the jobs and assets are the code location's, the server is
``bentoml serve``, the requests are HTTP. What the replay decides is only *when* things happen.
It prints one line per stage (details in the run log and the Dagster UI).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ml_assets import settings
from ml_assets.dataset import Dataset

log = logging.getLogger(__name__)

SERVED_SHARE = 5
"""One row in this many (by key) is served over HTTP; the others are batch-scored."""
BATCH = 200
"""Records per HTTP request."""


@dataclass
class Week:
    """What happened to one replayed partition."""

    partition: str
    rows: int = 0
    served: int = 0
    champion: str = ""
    failed: list[str] = field(default_factory=list)
    """Monitoring checks that did not pass (``name``)."""
    seconds: float = 0.0


@dataclass
class Story:
    """The replay's outcome, for the printed summary and the tests."""

    dataset: str
    first: str
    partitions: list[str]
    weeks: list[Week] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)
    realized: int = 0
    """Partitions whose realized performance was recomputed once the outcomes had arrived."""
    ok: bool = True

    def alerting(self, check: str) -> list[str]:
        return [w.partition for w in self.weeks if check in w.failed]


def replay_start(dataset: Dataset, lake: Any) -> tuple[str, list[str]]:
    """The first replayed partition (the first whose start is at or after the middle of the
    data's event-time range) and every partition with rows from there on."""
    keys = dataset.keys
    every: list[str] = dataset.partitions.keys()
    present = [p for p in every if lake.exists(keys.features, p)]
    if not present:
        raise RuntimeError(f"{dataset.name}: no feature partitions to replay")
    t = dataset.contract.entity.event_time
    frame = lake.scan(keys.features, present).select(pl.col(t)).collect()
    times = frame.get_column(t).drop_nulls()
    if times.len() == 0:
        raise RuntimeError(f"{dataset.name}: the feature table is empty")
    middle = times.min() + (times.max() - times.min()) / 2
    if middle.tzinfo is None:
        middle = middle.replace(tzinfo=dt.UTC)
    later = [p for p in present if dataset.partitions.utc_window(p)[0] >= middle]
    utc = times.dt.replace_time_zone("UTC") if times.dtype.time_zone is None else times
    with_rows = [  # from the event times read above: no second read per partition
        p for p in later if utc.is_between(*dataset.partitions.utc_window(p), closed="left").any()
    ]
    if not with_rows:
        raise RuntimeError(f"{dataset.name}: no partition with rows after {middle}")
    return with_rows[0], with_rows


class Replay:
    """Drives one dataset's replay (see the module docstring)."""

    def __init__(
        self,
        dataset: Dataset,
        view: Any,
        out: Callable[[str], None],
        instance: Any = None,
        plots: set[str] | None = None,
        served_share: int = SERVED_SHARE,
    ) -> None:
        import dagster as dg

        from ml_assets.definitions import defs, resources

        self.dataset, self.view, self.out = dataset, view, out
        self.instance = instance or dg.DagsterInstance.get()
        self.defs = defs
        self.lake = resources()["lake"]
        self.server: Any = None
        self.server_tag: str | None = None
        self.scored_by: dict[str, str] = {}
        self.cursor: str | None = None
        self.plots = plots
        self.served_share = served_share
        """One row in this many is served (0: none, every row batch-scored)."""

    # --- runs ---------------------------------------------------------------------------------

    def _execute(self, job: str, **kwargs: Any) -> Any:
        from ml_assets.cli import execute

        return execute(job, self.instance, self.view, bar=False, **kwargs)

    def _champion(self) -> str:
        from ml_assets.registry.tracking import CHAMPION, MlflowTracking

        return str(MlflowTracking().alias_version(self.dataset.name, CHAMPION))

    def _bento_tag(self, result: Any) -> str | None:
        for event in result.get_asset_materialization_events():
            meta = event.materialization.metadata
            if "bento_tag" in meta:
                return str(meta["bento_tag"].value)
        return None

    # --- serving ------------------------------------------------------------------------------

    def _serve(self, tag: str) -> None:
        """Serve ``tag`` (stopping the server of the previous champion once it is ready)."""
        from ml_assets.testing import start_server

        s = settings.current()
        env = settings.child_env()
        env.update(
            {
                "ML_ASSETS_HOME": str(s.root),
                "BENTOML_HOME": str(s.bentoml_home),
                "ML_ASSETS_PREDICTION_LOG": str(s.prediction_log_path),
                "ML_ASSETS_PREDICTION_LOG_FLUSH_SECONDS": "0.2",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        logs = s.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        name = tag.replace(":", "-")
        started = time.perf_counter()
        server = start_server(tag, env, logs / f"serve-{name}.log")
        server.wait_ready(timeout=180)
        old, self.server, self.server_tag = self.server, server, tag
        if old is not None:
            old.stop()
        log.info(
            "serving %s at %s (%.1f s to start)", tag, server.url, time.perf_counter() - started
        )

    def _post(self, records: list[dict[str, Any]]) -> int:
        import httpx

        sent = 0
        with httpx.Client(base_url=self.server.url, timeout=60, trust_env=False) as client:
            for i in range(0, len(records), BATCH):
                chunk = records[i : i + BATCH]
                reply = client.post("/v1/predict", json={"records": chunk})
                if reply.status_code != 200:
                    raise RuntimeError(
                        f"{self.dataset.name}: /v1/predict answered {reply.status_code}: "
                        f"{reply.text[:500]}"
                    )
                sent += len(chunk)
        return sent

    def _served_rows(self, partition: str) -> pl.DataFrame:
        """The partition's rows to serve: one in :data:`SERVED_SHARE` by key."""
        spec = self.dataset.spec
        frame = self.lake.scan(self.dataset.keys.features, [partition]).collect()
        if not self.served_share:
            return frame.head(0)
        return frame.filter(pl.concat_str(spec.key).hash(seed=7) % self.served_share == 0)

    def _records(self, rows: pl.DataFrame, features: list[str]) -> list[dict[str, Any]]:
        t = self.dataset.contract.entity.event_time
        spec = self.dataset.spec
        cols = [*dict.fromkeys([*spec.key, t, *features])]
        out = rows.select(cols).with_columns(
            pl.col(t).dt.replace_time_zone(None).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        )
        return out.to_dicts()

    def _wait_logged(self, partition: str, expected: int) -> int:
        from ml_assets.serve.prediction_log import read_served

        start, end = self.dataset.partitions.utc_window(partition)
        t = self.dataset.contract.entity.event_time
        deadline = time.monotonic() + 30
        while True:
            n = read_served(self.dataset.name, start, end, t).rows.height
            if n >= expected or time.monotonic() > deadline:
                return n
            time.sleep(0.1)

    # --- the loop -----------------------------------------------------------------------------

    def _reset(self, partitions: list[str]) -> None:
        """Make a second replay the same as the first: the monitoring results of the replayed
        partitions are removed (they are recomputed), and the dataset's prediction log is moved
        aside (``<dataset>.before-replay-<time>``, kept, not deleted), so no week reads what an
        earlier replay served."""
        for partition in partitions:
            path = self.lake.path(self.dataset.keys.monitoring, partition)
            if path.exists():
                path.unlink()
        from ml_assets.serve.prediction_log import set_aside

        suffix = f"before-replay-{time.strftime('%Y%m%d-%H%M%S')}"
        aside = set_aside(self.dataset.name, suffix)  # a folder or an object-store prefix
        if aside is not None:
            log.info("%s: the earlier prediction log moved to %s", self.dataset.name, aside)

    def run(self) -> Story:
        from ml_assets.monitor.sensors import training_op_name

        d, jobs, out = self.dataset, self.dataset.jobs, self.out
        first, partitions = replay_start(d, self.lake)
        self._reset(partitions)
        story = Story(d.name, first, partitions)
        start = d.partitions.utc_window(first)[0]
        cutoff = {"ops": {training_op_name(d): {"config": {"cutoff": start.isoformat()}}}}
        t0 = time.perf_counter()
        trained = self._execute(jobs.train, run_config=cutoff)
        if not trained.success:
            out(f"{jobs.train}: FAILED (see the log)")
            story.ok = False
            return story
        tag = self._bento_tag(trained)
        champion = self._champion()
        out(
            f"{jobs.train}: champion v{champion} trained on the rows before {first} "
            f"({time.perf_counter() - t0:.1f} s); bento {tag}"
        )
        t0 = time.perf_counter()
        self._serve(tag)
        story.servers.append(tag)
        out(f"  serving {tag} at {self.server.url} ({time.perf_counter() - t0:.1f} s to start)")
        features = self._features()
        plot_at = self.plots if self.plots is not None else {partitions[-1]}
        out(
            f"{d.name} replay: {len(partitions)} partitions ({first} .. {partitions[-1]}) as if "
            f"live: 1 in {self.served_share} rows served over HTTP, the rest batch-scored, each "
            "partition monitored, the retrain sensor evaluated after each"
        )
        t_loop = time.perf_counter()
        try:
            for i, partition in enumerate(partitions):
                week = self._week(partition, partitions[i:], features, partition in plot_at)
                story.weeks.append(week)
                if not week.champion:
                    out(f"  replay stopped at {partition}: {', '.join(week.failed)} (see the log)")
                    story.ok = False
                    break
                self._tick(story, partition, features)
        except Exception as exc:  # say what stopped the story, keep the traceback in the log
            log.exception("%s replay stopped", d.name)
            out(f"  replay stopped: {type(exc).__name__}: {str(exc)[:300]} (see the log)")
            story.ok = False
        finally:
            if self.server is not None:
                self.server.stop()
        took = time.perf_counter() - t_loop
        if story.ok:
            self._outcomes_arrive(story)
        self._summarise(story, took)
        summary = self._execute(jobs.monitoring_summary)
        if summary.success:
            meta = summary.get_asset_materialization_events()[0].materialization.metadata
            report = meta.get("report")
            out(
                f"  summary: {d.keys.monitoring_summary.to_user_string()} -> {report.value if report else ''}"
            )
        return story

    def _features(self) -> list[str]:
        from ml_assets.registry.tracking import MlflowTracking
        from ml_assets.train import core

        tracking = MlflowTracking()
        version = self._champion()
        problem = core.Problem.from_json(
            tracking.version_tags(self.dataset.name, version)["problem"]
        )
        return list(problem.features)

    def _week(self, partition: str, ahead: list[str], features: list[str], plots: bool) -> Week:
        d, jobs = self.dataset, self.dataset.jobs
        week = Week(partition)
        t0 = time.perf_counter()
        champion = self._champion()
        if self.scored_by.get(partition) != champion:
            scored = self._execute(jobs.score, partitions=ahead)
            if not scored.success:
                week.failed.append("batch scoring failed")
                return week
            self.scored_by.update(dict.fromkeys(ahead, champion))
        rows = self._served_rows(partition)
        if rows.height:
            week.served = self._post(self._records(rows, features))
            logged = self._wait_logged(partition, week.served)
            if logged < week.served:
                log.warning(
                    "%s: %d of %d served rows logged in time", partition, logged, week.served
                )
        _, end = d.partitions.utc_window(partition)
        # the domain classifier (1-3 s a partition) only where the plots are drawn
        config = {"plots": plots, "labels_as_of": end.isoformat(), "domain_classifier": plots}
        op = d.keys.monitoring.to_python_identifier()
        monitored = self._execute(
            jobs.monitor, partitions=[partition], run_config={"ops": {op: {"config": config}}}
        )
        if not monitored.success:
            week.failed.append("monitoring failed")
            return week
        for evaluation in monitored.get_asset_check_evaluations():
            if not evaluation.passed:
                week.failed.append(evaluation.check_name)
        meta = monitored.get_asset_materialization_events()[0].materialization.metadata
        week.rows = int(meta["rows"].value)
        week.champion = champion
        week.seconds = time.perf_counter() - t0
        return week

    def _tick(self, story: Story, partition: str, features: list[str]) -> None:
        """Evaluate the retrain sensor as the daemon would; run what it requests."""
        import dagster as dg

        sensor = self.defs.resolve_sensor_def(f"{self.dataset.name}_retrain_sensor")
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"lake": self.lake}
        )
        from ml_assets.progress import stderr_to_log

        with stderr_to_log(not self.view.verbose):  # the sensor's log lines: to the log file
            data = sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursor = data.cursor
        for request in data.run_requests or []:
            tags = {
                **request.tags,
                "dagster/sensor_name": sensor.name,
                "dagster/run_key": request.run_key,
            }
            before = self._champion()
            t0 = time.perf_counter()
            result = self._execute(
                self.dataset.jobs.train, run_config=request.run_config, tags=tags
            )
            after = self._champion()
            gate = next(
                (
                    e
                    for e in result.get_asset_check_evaluations()
                    if e.check_name == "promotion_gate"
                ),
                None,
            )
            retrain = {
                "at": partition,
                "incident": request.run_key,
                "cutoff": request.tags.get("ml_assets/cutoff", ""),
                "label_coverage": request.tags.get("ml_assets/label_coverage", ""),
                "success": result.success,
                "promoted": after != before,
                "from": before,
                "to": after,
                "gate": gate.description if gate is not None else "",
                "seconds": time.perf_counter() - t0,
            }
            story.retrains.append(retrain)
            self.out(
                f"  sensor {sensor.name} after {partition}: incident {request.run_key} "
                f"({float(retrain['label_coverage'] or 0):.0%} of its rows labelled) -> "
                f"{self.dataset.jobs.train} cut off at {retrain['cutoff'][:10]} "
                f"({retrain['seconds']:.1f} s)"
            )
            self.out(
                f"  promotion gate: {'promoted' if retrain['promoted'] else 'kept'} "
                f"v{after}: {retrain['gate']}"
            )
            if retrain["promoted"]:
                tag = self._bento_tag(result)
                if tag:
                    t0 = time.perf_counter()
                    self._serve(tag)
                    story.servers.append(tag)
                    ordered = story.partitions
                    at = ordered.index(partition)
                    upcoming = ordered[at + 1] if at + 1 < len(ordered) else partition
                    self.out(
                        f"  serving {tag} from {upcoming} on "
                        f"({time.perf_counter() - t0:.1f} s to start; the old server stopped)"
                    )

    def _outcomes_arrive(self, story: Story) -> None:
        """The weeks were monitored as of their own end, before any outcome had arrived (they
        come weeks later). Now, after the last week, every outcome is known: recompute only the
        realized performance of each replayed partition still missing labels, against the
        champion it was monitored with, as the late-labels sensor does when a label batch lands
        (its drift and estimated performance stay as they were computed live). Then the summary
        holds realized beside estimated performance, and the ``estimate_vs_realized`` check
        judges each week."""
        from ml_assets.monitor.sensors import incomplete_partitions, late_labels_run_config

        d = self.dataset
        results = self._results(story)
        waiting = [p for p in incomplete_partitions(results) if p in set(story.partitions)]
        t0 = time.perf_counter()
        failed = []
        op = d.keys.monitoring.to_python_identifier()
        for partition in waiting:
            config = late_labels_run_config(d)  # the late-labels sensor's request, as it is
            config["ops"][op]["config"]["plots"] = partition == story.partitions[-1]
            redone = self._execute(d.jobs.monitor, partitions=[partition], run_config=config)
            if not redone.success:
                failed.append(partition)
        story.realized = len(waiting) - len(failed)
        story.ok = story.ok and not failed
        self.out(
            f"  outcomes arrived after the weeks: realized performance of {story.realized} "
            f"partitions recomputed, nothing else ({time.perf_counter() - t0:.1f} s)"
            + (f"; FAILED: {', '.join(failed)}" if failed else "")
        )

    def _results(self, story: Story) -> pl.DataFrame:
        from ml_assets.monitor.sensors import read_results

        return read_results(self.lake, self.dataset).filter(
            pl.col("partition").is_in(story.partitions)
        )

    def _gap_warnings(self, story: Story) -> list[str]:
        """The replayed partitions whose ``estimate_vs_realized`` check last failed."""
        import dagster as dg

        check = dg.AssetCheckKey(self.dataset.keys.monitoring, "estimate_vs_realized")
        records = self.instance.event_log_storage.get_asset_check_execution_history(
            check, limit=10 * len(story.partitions)
        )
        done = {"SUCCEEDED": True, "FAILED": False}
        latest: dict[str, bool] = {}
        for record in records:  # newest first
            passed = done.get(record.status.value)
            if record.partition is not None and passed is not None:
                latest.setdefault(record.partition, passed)
        return [p for p in story.partitions if latest.get(p) is False]

    def _summarise(self, story: Story, took: float) -> None:
        from ml_assets.monitor.assets import ESTIMATED

        out, weeks = self.out, story.weeks
        served = sum(w.served for w in weeks)
        rows = sum(w.rows for w in weeks)
        out(
            f"  {len(weeks)} partitions monitored in {took:.1f} s: {rows:,} predictions, "
            f"{served:,} of them served over HTTP"
        )
        from ml_assets.monitor.incidents import drift_alerts

        results = self._results(story)
        primary = self.dataset.kind.nannyml_metrics[0]
        alerting: dict[str, set[str]] = {"estimated": set(), "realized": set(), "drift": set()}
        for (partition,), rows in results.group_by("partition"):
            counted, _ = drift_alerts(rows)
            if counted.filter(calculator="univariate_drift").height:
                alerting["drift"].add(str(partition))
            for what in ("estimated", "realized"):
                hit = rows.filter(
                    calculator=f"{what}_performance", metric=primary, alert=True
                ).height
                if hit:
                    alerting[what].add(str(partition))
        recon = results.filter(calculator="multivariate_drift", alert=True)
        alerting["reconstruction"] = set(recon.get_column("partition").to_list())
        gaps = self._gap_warnings(story)
        alerting["gap"] = set(gaps)
        for key, what in (
            ("estimated", f"estimated {primary} alert"),
            ("realized", f"realized {primary} alert"),
            ("reconstruction", "reconstruction error alert"),
            ("drift", "univariate drift alert (every method of a feature)"),
            ("gap", f"estimated vs realized {primary} gap alert"),
        ):
            ordered = [p for p in story.partitions if p in alerting[key]]
            out(f"  {what}: {_ranges(ordered, story.partitions) or 'none'}")
        for champion in dict.fromkeys(w.champion for w in weeks):
            mine = [w for w in weeks if w.champion == champion]
            bad = [w for w in mine if ESTIMATED in w.failed]
            out(
                f"  champion v{champion}: {mine[0].partition} .. {mine[-1].partition}, "
                f"{len(bad)} of {len(mine)} partitions with an estimated-performance alert"
            )


def _ranges(partitions: list[str], ordered: list[str]) -> str:
    """``a .. b, c`` for runs of consecutive partitions."""
    index = {p: i for i, p in enumerate(ordered)}
    runs: list[list[str]] = []
    for p in partitions:
        if runs and index[p] == index[runs[-1][-1]] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]} .. {r[-1]} ({len(r)})" for r in runs)


def replay_datasets(datasets: dict[str, Dataset]) -> list[str]:
    """The datasets whose contract asks the demo to replay them."""
    return [n for n, d in datasets.items() if d.contract.demo and d.contract.demo.replay]


def monitor_latest(
    dataset: Dataset, view: Any, out: Callable[[str], None], n: int = 2, instance: Any = None
) -> bool:
    """Monitor the dataset's ``n`` latest batch-scored partitions (one run each, the plots of
    the newest), then its monitoring summary: what the demo does for datasets it does not
    replay."""
    from ml_assets.cli import run_monitoring, scored_partitions

    return run_monitoring(dataset, scored_partitions(dataset)[-n:], view, instance=instance)


def others_main(argv: list[str] | None = None) -> int:
    """``python -m ml_assets.replay NAME...``: the demo's datasets that are not replayed, run end
    to end and their latest partitions monitored, in a process of their own so they run beside
    the replay (whose serving and Dagster bookkeeping leave the second core idle)."""
    import argparse

    from ml_assets import cli
    from ml_assets.dataset import load_datasets

    parser = argparse.ArgumentParser(prog="python -m ml_assets.replay")
    parser.add_argument("dataset", nargs="+")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    cli._dagster_home()
    view = cli._view("demo-others", args.verbose)
    datasets = load_datasets()
    ok = True
    for name in args.dataset:
        ok = cli.run_dataset(name, view=view) and ok
        ok = monitor_latest(datasets[name], view, cli._out) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(others_main())
