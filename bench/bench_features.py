"""Features benchmark: point-in-time training-set build (polars vs pandas) and online lookups.

1. **Training-set build** at each size (car-loan demo rows resampled with ``demo_frames``):
   every feature of ``contracts/features/car_loan.yaml`` for every row as of its event time
   (row transforms; label aggregates by ``observed_at``; entity aggregates; request-time parts)
   and the labels known at the cutoff. Ours: ``compute_training_set`` (polars and numpy,
   per-group cumulative sums read where a binary search of the group's event times lands, at
   t and at t - window, see ``--polars-path``). Baseline: the same algorithm
   step by step in pandas, generic over the same spec (per-group ``cumsum`` +
   ``pd.merge_asof(..., allow_exact_matches=False)`` at t and at t - window). Each runs in its
   own process on the same parquet inputs, best of ``--repeat`` builds: wall time (and CPU
   time) of the build (pandas' inputs already in memory; ours: see ``--inputs``), and the
   process's peak RSS. At the smallest size both outputs are compared value by value.
2. **Online lookups**: a store holding one row per key for ``--groups`` keys (an aggregate
   grouped by the entity key), written with ``write_snapshot``; ``OnlineClient.get`` for 1 and
   100 random keys, p50/p99 over many calls, on SQLite and PostgreSQL; plus the whole serving
   path (``online_features``, one request record, car-loan spec) on SQLite.

    .venv/bin/python bench/bench_features.py --rows 1000000 10000000
    .venv/bin/python bench/bench_features.py --rows 1000000 10000000 --skip-online  # part 1 only

``--polars-path`` picks ours: ``direct`` (default: ``compute_training_set``, features of the
labelled rows only) or ``two-step`` (``compute_features`` of every row, then
``build_training_set``); ``--inputs`` how ours gets its inputs: ``scan`` (default: the parquet
files scanned lazily inside the timed build, as the platform reads its lake) or ``memory`` (read
first, untimed, like pandas'). The process's peak RSS includes its inputs, so with ``memory``
it cannot go below inputs + output.

``--before DIR`` runs the same build of another checkout too (its ``bench/bench_features.py``
worker, with its own ``ml_assets``), in the same run on the same inputs, for a before/after
table side by side with pandas; its output must equal ours value for value at every size:

    git worktree add --detach /tmp/before <commit>
    .venv/bin/python bench/bench_features.py --rows 1000000 10000000 --skip-online \
        --before /tmp/before

PostgreSQL: a fresh database on ``--pg-url``'s server (default: the local test server),
dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONTRACT = "car_loan"
SPEEDUP_TARGET = 5.0
PEAK_TARGET_MB, PEAK_TARGET_ROWS = 2000, 10_000_000  # the build's peak RSS at 10M rows (issue 12)
P99_TARGET_MS = 2.0
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _peak_rss_mb() -> float:
    """Peak RSS of this process's own memory (VmHWM): unlike ru_maxrss it does not carry over
    the parent's high-water mark through fork + exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """User + system CPU seconds of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _spec() -> Any:
    from ml_assets.contracts import load_contracts
    from ml_assets.features import load_feature_spec

    return load_feature_spec(load_contracts()[CONTRACT])


# --- data ------------------------------------------------------------------------------------


def make_data(rows: int, folder: Path) -> dict[str, Any]:
    """Entity and label parquet files of ``rows`` resampled demo rows, typed like validated."""
    import polars as pl

    from ml_assets.ingest.demo import demo_frames

    spec = _spec()
    c = spec.contract
    started = time.perf_counter()
    frames = demo_frames(c, rows=rows, seed=0)
    ent = frames["entity"].with_columns(pl.col(c.entity.event_time).dt.replace_time_zone("UTC"))
    lab = frames["labels"].with_columns(pl.col(c.labels.observed_at).dt.replace_time_zone("UTC"))
    folder.mkdir(parents=True, exist_ok=True)
    ent.write_parquet(folder / "entity.parquet")
    lab.write_parquet(folder / "labels.parquet")
    # Cutoff: the last event; every earlier row is in the window, labels known by then only.
    cutoff = ent.get_column(c.entity.event_time).max()
    window_days = (cutoff - ent.get_column(c.entity.event_time).min()).days + 1
    return {
        "rows": ent.height,
        "labels": lab.height,
        "cutoff": cutoff.isoformat(),
        "window_days": window_days,
        "seconds": time.perf_counter() - started,
    }


# --- the two implementations -----------------------------------------------------------------


def polars_build(
    folder: Path, cutoff: str, window_days: int, path: str = "direct", inputs: str = "scan"
) -> tuple[Any, dict]:
    """Ours. ``path``: ``direct`` = ``compute_training_set`` (features of the labelled rows in
    the window only, events derived from the same rows and labels: each file read once when it
    fits in one chunk); ``two-step`` = ``compute_features`` for every row, then
    ``build_training_set`` (the feature-table path; all main had). ``inputs``: ``scan`` = the
    parquet files scanned lazily, read inside the timed build (as the platform reads its lake);
    ``memory`` = read into memory first, untimed, like pandas' inputs."""
    import polars as pl

    from ml_assets.features import compute
    from ml_assets.features.spec import Source

    spec = _spec()
    if inputs == "scan":
        ent = pl.scan_parquet(folder / "entity.parquet")
        lab = pl.scan_parquet(folder / "labels.parquet")
    else:
        ent = pl.read_parquet(folder / "entity.parquet")
        lab = pl.read_parquet(folder / "labels.parquet")
    base = _rss_mb()
    cpu = _cpu_s()
    started = time.perf_counter()
    cut, window = dt.datetime.fromisoformat(cutoff), dt.timedelta(days=window_days)
    if path == "direct":  # the events of these very rows and labels (events=None)
        out = compute.compute_training_set(spec, ent, lab, None, cut, window)
    else:
        events = {
            Source.ENTITY: compute.entity_events(spec, ent),
            Source.LABELS: compute.label_events(spec, lab, ent),
        }
        feats = compute.compute_features(spec, ent, events)
        out = compute.build_training_set(spec, feats, lab, cut, window)
    took = time.perf_counter() - started
    return out, {"seconds": took, "cpu_seconds": _cpu_s() - cpu, "rss_inputs_mb": base}


def pandas_build(folder: Path, cutoff: str, window_days: int) -> tuple[Any, dict]:
    """The same training set in pandas, generic over the same spec."""
    import numpy as np
    import pandas as pd

    from ml_assets.features.spec import (
        Agg,
        DatePart,
        DatePartOf,
        Log1p,
        MapValues,
        Passthrough,
        Ratio,
        Source,
    )

    spec = _spec()
    c = spec.contract
    key, ts, tz = spec.key, spec.event_time, spec.timezone
    ent = pd.read_parquet(folder / "entity.parquet")
    lab = pd.read_parquet(folder / "labels.parquet")
    base = _rss_mb()
    cpu = _cpu_s()
    started = time.perf_counter()

    def part(s: pd.Series, p: DatePart) -> pd.Series:
        local = s.dt.tz_convert(tz)
        return {
            DatePart.HOUR: lambda: local.dt.hour,
            DatePart.WEEKDAY: lambda: local.dt.weekday + 1,
            DatePart.MONTH: lambda: local.dt.month,
            DatePart.DAY: lambda: local.dt.day,
        }[p]().astype("Int64")

    out = ent[[*key, ts]].copy()
    for f in spec.row:
        if isinstance(f, Passthrough):
            out[f.name] = ent[f.column]
        elif isinstance(f, MapValues):
            out[f.name] = ent[f.column].map(f.mapping)
        elif isinstance(f, Ratio):
            den = ent[f.denominator].astype(float)
            out[f.name] = (ent[f.numerator] / den).where(den != 0)
        elif isinstance(f, Log1p):
            x = ent[f.column].astype(float)
            out[f.name] = np.log1p(x.where(x > -1))
        elif isinstance(f, DatePartOf):
            out[f.name] = part(ent[f.column or ts], f.part)

    renamed = dict(zip(c.labels.key_columns, key, strict=True))
    for (source, g), aggs in _buckets(spec).items():
        if any(a.agg is Agg.LAST for a in aggs):
            raise NotImplementedError("the pandas baseline covers count, sum, mean and rate")
        # The same algorithm as ours: events in time order, running totals per group, one
        # strict backward as-of lookup at t and one per distinct window at t - window.
        if source is Source.ENTITY:
            ev = ent[[*key, ts, g, *{a.column for a in aggs if a.column}]].rename(columns={ts: "t"})
        else:
            lv = lab.rename(columns={**renamed, c.labels.observed_at: "t"})
            ev = lv.merge(ent[[*key, g]], on=key, how="inner")
        ev = ev[ev[g].notna()].sort_values("t", kind="stable")
        cols: dict[str, pd.Series] = {}
        for i, a in enumerate(aggs):
            if a.agg is Agg.COUNT:
                cols[f"n{i}"] = pd.Series(1, index=ev.index)
            else:
                v = (ev[a.column] == a.equals) if a.agg is Agg.RATE else ev[a.column]
                v = v.astype(float).where(ev[a.column].notna())
                cols[f"s{i}"], cols[f"n{i}"] = v.fillna(0.0), v.notna().astype("int64")
        per = pd.DataFrame(cols)
        run = per.groupby(ev[g], sort=False).cumsum()
        run[g], run["t"] = ev[g], ev["t"]
        q = ent.loc[ent[g].notna(), [ts, g]].rename(columns={ts: "t"}).sort_values("t")
        hi = pd.merge_asof(q, run, on="t", by=g, allow_exact_matches=False)
        lows = {
            w: pd.merge_asof(q.assign(t=q["t"] - w), run, on="t", by=g, allow_exact_matches=False)
            for w in dict.fromkeys(a.window_delta for a in aggs)
        }
        for i, a in enumerate(aggs):
            lo = lows[a.window_delta]
            n = hi[f"n{i}"].fillna(0).to_numpy() - lo[f"n{i}"].fillna(0).to_numpy()
            if a.agg is Agg.COUNT:
                val = pd.Series(n, index=q.index, dtype="Int64")
            else:
                s = hi[f"s{i}"].fillna(0).to_numpy() - lo[f"s{i}"].fillna(0).to_numpy()
                mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
                val = pd.Series(s if a.agg is Agg.SUM else mean, index=q.index)
            out[a.name] = val  # aligned on the entity index; rows with a null group stay null
    for r in spec.request:
        out[r.name] = part(out[ts], r.part)

    cut = pd.Timestamp(cutoff)
    rows = out[(out[ts] >= cut - pd.Timedelta(days=window_days)) & (out[ts] < cut)]
    known = lab[lab[c.labels.observed_at] < cut].rename(columns=renamed)
    result = rows.merge(known[[*key, c.labels.observed_at, c.target]], on=key, how="inner")
    if result.duplicated(key).any():  # a key labelled twice: its latest label before the cutoff
        result = result.sort_values(c.labels.observed_at).drop_duplicates(key, keep="last")
    result = result[[*key, ts, *spec.names, c.target]]
    took = time.perf_counter() - started
    return result, {"seconds": took, "cpu_seconds": _cpu_s() - cpu, "rss_inputs_mb": base}


def _buckets(spec: Any) -> dict:
    out: dict = {}
    for a in spec.aggregates:
        out.setdefault((a.source, a.group_by), []).append(a)
    return out


def worker(
    impl: str,
    folder: Path,
    cutoff: str,
    window_days: int,
    result: Path,
    repeat: int,
    path: str = "direct",
    inputs: str = "scan",
) -> None:
    times, cpus, peak = [], [], 0.0
    for _ in range(repeat):
        if impl == "polars":
            out, facts = polars_build(folder, cutoff, window_days, path, inputs)
        else:
            out, facts = pandas_build(folder, cutoff, window_days)
        times.append(facts["seconds"])
        cpus.append(facts["cpu_seconds"])
        if len(times) == 1:
            peak = _peak_rss_mb()  # after the first build: no leftovers of earlier ones in it
    best = times.index(min(times))
    facts = {
        **facts,
        "seconds": times[best],
        "cpu_seconds": cpus[best],
        "all_seconds": times,
        "peak_rss_mb": peak,
    }
    facts["rows_out"] = len(out)
    if impl == "pandas":
        import polars as pl

        out = pl.from_pandas(out)
    out.write_parquet(folder / f"out_{impl}.parquet")
    result.write_text(json.dumps(facts))


def run_worker(
    impl: str,
    folder: Path,
    data: dict,
    repeat: int,
    path: str = "direct",
    inputs: str = "scan",
    script: Path | None = None,
) -> dict:
    """One implementation's builds in a process of their own; ``script``: this benchmark as
    another checkout has it (its worker imports that checkout's ``ml_assets``)."""
    result = folder / f"{impl}.json"
    cmd = [
        sys.executable,
        str(script or __file__),
        "--worker",
        impl,
        "--data",
        str(folder),
        "--cutoff",
        data["cutoff"],
        "--window-days",
        str(data["window_days"]),
        "--result",
        str(result),
        "--repeat",
        str(repeat),
        "--polars-path",
        path,
        "--inputs",
        inputs,
    ]
    subprocess.run(cmd, check=True)
    return json.loads(result.read_text())


def compare_outputs(folder: Path) -> str:
    import polars as pl

    from ml_assets.features.parity import compare_features

    spec = _spec()
    a = pl.read_parquet(folder / "out_polars.parquet").sort(spec.key)
    b = pl.read_parquet(folder / "out_pandas.parquet").sort(spec.key)
    if (
        a.height != b.height
        or a.get_column(spec.key[0]).to_list() != b.get_column(spec.key[0]).to_list()
    ):
        return f"DIFFERENT rows ({a.height} vs {b.height})"
    report = compare_features(a, b, [*spec.names, spec.contract.target], rtol=1e-6)
    bad = {k: v for k, v in report.mismatches.items() if v}
    return "identical (floats within 1e-6)" if not bad else f"MISMATCH {bad} {report.examples[:3]}"


def compare_before(folder: Path) -> str:
    """Our output against the checkout's (``--before``): the same frame, value for value."""
    import polars as pl

    before = pl.read_parquet(folder / "out_before.parquet")
    ours = pl.read_parquet(folder / "out_polars.parquet")
    return "identical" if ours.equals(before) else f"DIFFERENT ({ours.shape} vs {before.shape})"


# --- online lookups --------------------------------------------------------------------------


BENCH_SPEC = """
dataset: car_loan
row:
  - {name: car_value, op: passthrough, column: car_value}
aggregates:
  - {name: n_7d, source: entity, group_by: id, agg: count, window: 7d}
  - {name: mean_value_30d, source: entity, group_by: id, agg: mean, column: car_value, window: 30d}
  - {name: n_90d, source: entity, group_by: id, agg: count, window: 90d}
  - {name: sum_value_90d, source: entity, group_by: id, agg: sum, column: car_value, window: 90d}
"""


def _percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49] * 1e3, q[98] * 1e3


def bench_lookups(url: str, groups: int, calls: int) -> list[dict]:
    import polars as pl
    import sqlalchemy as sa

    from ml_assets.contracts import load_contracts
    from ml_assets.features.compute import aggregate_snapshot, entity_events
    from ml_assets.features.online import OnlineClient, write_snapshot
    from ml_assets.features.spec import Source, parse_feature_spec
    from ml_assets.ingest.demo import demo_frames

    contract = load_contracts()[CONTRACT]
    spec = parse_feature_spec(BENCH_SPEC, contract, "bench")
    ent = demo_frames(contract, rows=groups, seed=1)["entity"].with_columns(
        pl.col("timestamp").dt.replace_time_zone("UTC")
    )
    as_of = ent.get_column("timestamp").max()
    snap = aggregate_snapshot(spec, {Source.ENTITY: entity_events(spec, ent)}, as_of)
    engine = sa.create_engine(url)
    t0 = time.perf_counter()
    write_snapshot(engine, spec, snap, as_of)
    write_s = time.perf_counter() - t0
    engine.dispose()
    rng = random.Random(0)
    out = []
    with OnlineClient(url) as client:
        for n in (1, 100):
            for _ in range(50):  # warm up: connection, registry, statement cache
                client.get(CONTRACT, rng.sample(range(groups), n))
            samples = []
            for _ in range(calls if n == 1 else calls // 4):
                keys = rng.sample(range(groups), n)
                t = time.perf_counter()
                got = client.get(CONTRACT, keys)
                samples.append(time.perf_counter() - t)
            assert got.height == n
            p50, p99 = _percentiles(samples)
            out.append({"keys": n, "p50_ms": p50, "p99_ms": p99, "calls": len(samples)})
    out[0]["groups"] = groups
    out[0]["write_s"] = write_s
    return out


def bench_serving_path(url: str, calls: int) -> dict:
    """``online_features`` for one request record, car-loan spec, after its store is written."""
    import polars as pl
    import sqlalchemy as sa

    from ml_assets.features.compute import aggregate_snapshot, entity_events, label_events
    from ml_assets.features.online import OnlineClient, online_features, write_snapshot
    from ml_assets.features.spec import Source
    from ml_assets.ingest.demo import demo_frames

    spec = _spec()
    frames = demo_frames(spec.contract, rows=100_000, seed=2)
    ent = frames["entity"].with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    lab = frames["labels"].with_columns(pl.col("observed_at").dt.replace_time_zone("UTC"))
    as_of = ent.get_column("timestamp").max()
    events = {Source.ENTITY: entity_events(spec, ent), Source.LABELS: label_events(spec, lab, ent)}
    engine = sa.create_engine(url)
    write_snapshot(engine, spec, aggregate_snapshot(spec, events, as_of), as_of)
    engine.dispose()
    records = ent.drop("timestamp").head(500).to_dicts()
    samples = []
    with OnlineClient(url) as client:
        for i in range(calls + 50):
            t = time.perf_counter()
            online_features(spec, [records[i % len(records)]], client, request_time=as_of)
            if i >= 50:
                samples.append(time.perf_counter() - t)
    p50, p99 = _percentiles(samples)
    return {"p50_ms": p50, "p99_ms": p99, "calls": len(samples)}


def _pg_database(pg_url: str) -> tuple[str, Any]:
    import sqlalchemy as sa

    admin_url = sa.make_url(pg_url)
    name = f"mlassets_bench_features_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return admin_url.set(database=name).render_as_string(hide_password=False), drop


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--groups", type=int, default=100_000, help="keys in the lookup store")
    parser.add_argument("--calls", type=int, default=4000, help="lookups per 1-key case")
    parser.add_argument("--pg-url", default=os.environ.get("ML_ASSETS_TEST_PG_URL", DEFAULT_PG))
    parser.add_argument("--skip-pandas-above", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="builds per case; best is reported")
    parser.add_argument(
        "--polars-path",
        choices=["direct", "two-step"],
        default="direct",
        help="direct: compute_training_set; two-step: compute_features + build_training_set",
    )
    parser.add_argument(
        "--inputs",
        choices=["scan", "memory"],
        default="scan",
        help="polars inputs: parquet scanned inside the timed build, or read into memory first",
    )
    parser.add_argument(
        "--skip-online", action="store_true", help="only the training-set build, no lookups"
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of the code before (e.g. `git worktree add DIR COMMIT`): its polars "
        "build runs too, in the same run on the same inputs, and the outputs are compared",
    )
    parser.add_argument("--worker", choices=["polars", "pandas"])
    parser.add_argument("--data")
    parser.add_argument("--cutoff")
    parser.add_argument("--window-days", type=int)
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.worker:
        worker(
            args.worker,
            Path(args.data),
            args.cutoff,
            args.window_days,
            Path(args.result),
            args.repeat,
            args.polars_path,
            args.inputs,
        )
        return 0

    from ml_assets.settings import disable_telemetry

    disable_telemetry()
    import polars as pl

    cmd = "python " + shlex.join(["bench/bench_features.py", *sys.argv[1:]])
    print(f"# Features benchmark\n\n`{cmd}`\n")
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"polars {pl.__version__}, pandas {__import__('pandas').__version__}\n"
    )
    ok = True
    before = "| before s (CPU s) | before peak RSS MB | before speedup " if args.before else ""
    lines = [
        f"| rows | labelled rows out {before}| polars build s (CPU s) | polars peak RSS MB "
        "| pandas build s (CPU s) | pandas peak RSS MB | speedup | outputs |",
        "|---:|---:|"
        + ("---:|---:|---:|" if args.before else "")
        + "---:|---:|---:|---:|---:|---|",
    ]

    def cells(facts: dict) -> str:
        return (
            f"| {facts['seconds']:.2f} ({facts['cpu_seconds']:.2f}) | {facts['peak_rss_mb']:,.0f} "
        )

    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        for i, rows in enumerate(args.rows):
            folder = Path(tmp) / str(rows)
            data = make_data(rows, folder)
            print(f"generated {rows:,} rows in {data['seconds']:.1f} s", file=sys.stderr)
            bef = None
            if args.before:  # the checkout's build, then ours, on the same inputs
                script = args.before.resolve() / "bench" / "bench_features.py"
                bef = run_worker(
                    "polars", folder, data, args.repeat, args.polars_path, args.inputs, script
                )
                (folder / "out_polars.parquet").rename(folder / "out_before.parquet")
            pol = run_worker("polars", folder, data, args.repeat, args.polars_path, args.inputs)
            skip = args.skip_pandas_above is not None and rows > args.skip_pandas_above
            pan = None if skip else run_worker("pandas", folder, data, args.repeat)
            print(
                f"{rows:,}: before {bef and bef['all_seconds']}, polars {pol['all_seconds']}, "
                f"pandas {pan and pan['all_seconds']}",
                file=sys.stderr,
            )
            same = [compare_outputs(folder) + " to pandas"] if pan is not None and i == 0 else []
            if bef is not None:
                versus = compare_before(folder)
                ok &= versus == "identical"
                same.append(versus + " to before")
            speed = pan["seconds"] / pol["seconds"] if pan else float("nan")
            ok &= pan is None or speed >= SPEEDUP_TARGET
            ok &= rows < PEAK_TARGET_ROWS or pol["peak_rss_mb"] <= PEAK_TARGET_MB
            lines.append(
                f"| {rows:,} | {pol['rows_out']:,} "
                + (
                    cells(bef) + (f"| {pan['seconds'] / bef['seconds']:.1f}x " if pan else "| - ")
                    if bef
                    else ""
                )
                + cells(pol)
                + (cells(pan) + f"| {speed:.1f}x " if pan else "| skipped | - | - ")
                + f"| {'; '.join(same) or '-'} |"
            )
            for p in folder.glob("*.parquet"):
                p.unlink()
        print(
            "## Point-in-time training-set build (all car_loan features, labels at cutoff)\n\n"
            f"Build time: best of {args.repeat} in one process; pandas' inputs loaded first, not "
            f"timed; polars: `--polars-path {args.polars_path} --inputs {args.inputs}` ("
            + (
                "parquet scanned inside the timed build"
                if args.inputs == "scan"
                else "inputs loaded first, not timed"
            )
            + "). Peak RSS: the process's high-water mark (VmHWM), inputs included.\n"
        )
        print("\n".join(lines))
        print(
            f"\nTargets: polars at least {SPEEDUP_TARGET:.0f}x faster than pandas; polars peak RSS "
            f"at most {PEAK_TARGET_MB:,} MB at {PEAK_TARGET_ROWS:,} rows and above.\n"
        )
        if args.skip_online:
            print(f"\nAll targets met: {ok}")
            return 0 if ok else 1

        print(f"## Online lookups ({args.groups:,} keys in the store)\n")
        print("| backend | keys per call | p50 ms | p99 ms | calls |")
        print("|---|---:|---:|---:|---:|")
        pg_url, drop = _pg_database(args.pg_url)
        try:
            for backend, url in (
                ("sqlite", f"sqlite:///{Path(tmp) / 'online.sqlite'}"),
                ("postgresql", pg_url),
            ):
                for r in bench_lookups(url, args.groups, args.calls):
                    print(
                        f"| {backend} | {r['keys']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
                        f"| {r['calls']} |"
                    )
                    if backend == "sqlite" and r["keys"] == 1:
                        ok &= r["p99_ms"] < P99_TARGET_MS
            serving = bench_serving_path(f"sqlite:///{Path(tmp) / 'serving.sqlite'}", 1000)
        finally:
            drop()
        print(
            f"\nWhole serving path (`online_features`, 1 record, car_loan spec, SQLite): "
            f"p50 {serving['p50_ms']:.2f} ms, p99 {serving['p99_ms']:.2f} ms.\n"
        )
        print(f"Target: p99 under {P99_TARGET_MS:g} ms for 1 key on SQLite.")
    print(f"\nAll targets met: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
