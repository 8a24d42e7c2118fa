"""Ingestion + validation benchmark: rows/s and peak memory, SQLite and PostgreSQL, 1M and 10M rows.

For each backend and size:

1. seed the demo source (``seed_demo``) with N car-loan rows; timed, but reported apart;
2. run the real Dagster pipeline: the car_loan entity's raw asset + validated asset (and its
   quarantine twin) over every weekly partition as ONE run (single-run backfill, partition
   range tags), in a fresh process: wall and CPU time of the run, the steps' durations, the
   time Dagster spends storing its events, and the process's peak RSS;
3. validation alone, over the raw lake partitions that run wrote: ``split_valid`` (types, rules,
   quarantine with reasons) against a bare polars ``df.filter(<all rules>)`` on frames whose
   types are already cast, the rules built generically from the contract. Both per partition,
   as the pipeline does, on the partitions as they are and with bad rows injected; the valid
   row counts must agree.

Every measured case runs in its own subprocess (this script re-invoked with ``--case``) so one
case's memory never shows up in another's peak RSS. See bench/README.md.

    .venv/bin/python bench/bench_ingest.py --rows 1000000 10000000 --backends sqlite postgresql

The PostgreSQL backend creates the database ``mlassets_bench`` on the local server (dropped
afterwards); ``--pg-url`` points at another server.

Only step 3, again, on the lakes an earlier run left in its workdir (made first if missing):

    .venv/bin/python bench/bench_ingest.py --rows 1000000 10000000 --backends sqlite \
        --workdir /tmp/bench_ingest --validate-only --repeat 3 --out /tmp/validate.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONTRACT = "car_loan"
ROLE = "entity"
PG_DB = "mlassets_bench"
RSS_TARGET_MB = 2048
RATIO_TARGET = 3.0
REPO = Path(__file__).resolve().parent.parent


# --- helpers shared by the cases --------------------------------------------------------------


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _contract():
    from ml_assets.contracts import load_contracts

    return load_contracts(None)[CONTRACT]


def _emit(result: dict[str, Any]) -> None:
    """A case's result: the last stdout line, as JSON."""
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


# --- case: seed -------------------------------------------------------------------------------


def case_seed(args: argparse.Namespace) -> None:
    import sqlalchemy as sa

    from ml_assets.ingest.demo import seed_demo

    contract = _contract()
    t0 = time.perf_counter()
    counts = seed_demo(args.url, contract, rows=args.case_rows, seed=0)
    seeded = time.perf_counter() - t0
    # A production database has planner statistics; a freshly COPYed table has none yet.
    t0 = time.perf_counter()
    engine = sa.create_engine(args.url)
    with engine.connect() as conn:
        for table in contract.tables.values():
            conn.execute(sa.text(f"ANALYZE {conn.dialect.identifier_preparer.quote(table.table)}"))
        conn.commit()
    engine.dispose()
    _emit(
        {
            "seed_s": seeded,
            "analyze_s": time.perf_counter() - t0,
            "counts": counts,
            "peak_rss_mb": _peak_rss_mb(),
        }
    )


# --- case: pipeline ---------------------------------------------------------------------------


def case_pipeline(args: argparse.Namespace) -> None:
    """Materialize raw + validated entity over all partitions in one run (env set by the parent)."""
    import dagster as dg

    from ml_assets.dataset import Dataset
    from ml_assets.definitions import defs

    dataset = Dataset.build(_contract())
    keys = dataset.partitions.keys()
    raw, vkey, qkey = (
        dataset.keys.raw[ROLE],
        dataset.keys.validated[ROLE],
        dataset.keys.quarantine[ROLE],
    )
    assets = [defs.resolve_assets_def(raw), defs.resolve_assets_def(vkey)]
    tags = {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }
    instance = dg.DagsterInstance.get()  # DAGSTER_HOME: a fresh SQLite instance per case
    # Time spent storing the run's events (Dagster's bookkeeping: logs, planned and reported
    # materializations per partition), to say where the wall time goes. Measurement only.
    storage = instance.event_log_storage
    store_event = storage.store_event
    event_stats = {"events": 0, "seconds": 0.0}

    def timed_store_event(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return store_event(*a, **kw)
        finally:
            event_stats["events"] += 1
            event_stats["seconds"] += time.perf_counter() - t

    storage.store_event = timed_store_event  # type: ignore[method-assign]
    rss_before = _rss_mb()
    load_before = os.getloadavg()[0]
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    result = dg.materialize(
        assets,
        instance=instance,  # resources: bound to the resolved assets (ML_ASSETS_* env)
        tags=tags,
        selection=[raw, vkey, qkey],
        raise_on_error=False,
    )
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    peak = _peak_rss_mb()

    rows: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        count = mat.metadata.get("dagster/row_count")
        if count is not None:
            rows[mat.asset_key.to_user_string()] = int(count.value)
    steps: dict[str, float] = {}
    started: dict[str, float] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS" and event.step_key in started:
            steps[event.step_key] = entry.timestamp - started[event.step_key]
    checks = {
        c.check_name: c.passed for c in result.get_asset_check_evaluations() if c.asset_key == vkey
    }
    _emit(
        {
            "success": result.success,
            "wall_s": wall,
            "cpu_s": cpu,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "rss_before_mb": rss_before,
            "peak_rss_mb": peak,
            "partitions": len(keys),
            "rows": rows,
            "steps_s": steps,
            "event_log": event_stats,
            "checks": checks,
            "raw_key": raw.to_user_string(),
            "validated_key": vkey.to_user_string(),
            "quarantine_key": qkey.to_user_string(),
        }
    )


# --- case: validation alone -------------------------------------------------------------------


def bare_rules(table) -> Any:
    """Every rule of a contract table as ONE polars predicate over already-typed columns.

    Built from the contract alone: non-null, ranges, allowed values, finite floats, unique key.
    A rule on a nullable column lets nulls through (as pandera's checks do).
    """
    import polars as pl

    from ml_assets.contracts.model import ColumnType

    preds = []
    for name, col in table.columns.items():
        c = pl.col(name)
        checks = []
        if col.min is not None:
            checks.append(c >= col.min)
        if col.max is not None:
            checks.append(c <= col.max)
        if col.allowed is not None:
            checks.append(c.is_in(col.allowed))
        if col.type is ColumnType.FLOAT:
            checks.append(c.is_finite())
        rule = pl.all_horizontal(checks) if checks else None
        if col.nullable:
            if rule is not None:
                preds.append(c.is_null() | rule)
        else:
            preds.append(c.is_not_null() if rule is None else c.is_not_null() & rule)
    key = list(table.key)
    if key:
        dup = pl.col(key[0]).is_duplicated() if len(key) == 1 else pl.struct(key).is_duplicated()
        preds.append(~dup)
    return pl.all_horizontal(preds)


def cast_all(raw, table, tz: str):
    """The raw frame at the contract's types, the way split_valid casts it (not timed)."""
    import polars as pl

    from ml_assets.contracts.model import ColumnType
    from ml_assets.validate.schema import cast_expr, parse_datetimes

    exprs = []
    for name, col in table.columns.items():
        if col.type is ColumnType.DATETIME and raw.schema[name] == pl.String:
            exprs.append(pl.lit(parse_datetimes(raw.get_column(name), tz)).alias(name))
        else:
            exprs.append(cast_expr(name, col, raw.schema[name], tz).alias(name))
    return raw.select(exprs)


def make_dirty(raw, table, every: int = 1000):
    """A partition with some broken rows, built from the contract: every ``every``-th value of
    the first ranged numeric column just below its minimum, and the second row's key a copy
    of the first's (both of those rows then break uniqueness)."""
    import polars as pl

    index = pl.int_range(pl.len())
    ranged = [
        name
        for name, col in table.columns.items()
        if col.min is not None and name not in table.key and raw.schema[name].is_numeric()
    ]
    if ranged:
        name = ranged[0]
        below = pl.lit(table.columns[name].min - 1).cast(raw.schema[name])
        raw = raw.with_columns(
            pl.when(index % every == 0).then(below).otherwise(pl.col(name)).alias(name)
        )
    if len(table.key) == 1 and raw.height >= 2:
        key = table.key[0]
        raw = raw.with_columns(
            pl.when(index == 1).then(pl.col(key).first()).otherwise(pl.col(key)).alias(key)
        )
    return raw


def case_validate(args: argparse.Namespace) -> None:
    """split_valid vs a bare polars filter, partition by partition, clean and with bad rows.

    Wall and CPU time (this process, all threads) of each; with ``--repeat`` > 1 each one runs
    that many times per partition and the fastest counts (a shared machine only adds time).
    """
    import polars as pl

    from ml_assets.dataset import Dataset
    from ml_assets.storage import Lake
    from ml_assets.validate.quarantine import split_valid
    from ml_assets.validate.schema import pandera_schema

    contract = _contract()
    table = contract.tables[ROLE]
    tz = contract.partitioning.timezone
    schema = pandera_schema(table, name=f"{contract.name}.{ROLE}")
    rule = bare_rules(table)
    folder = Path(
        str(Lake(base_path=args.lake).path(Dataset.build(contract).keys.raw[ROLE], None).parent)
    )
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no raw partitions under {folder}")
    repeat = max(1, args.repeat or 1)

    def timed(fn: Any) -> tuple[Any, float, float]:
        """fn's result, and its best wall and CPU seconds over ``repeat`` runs."""
        best_wall = best_cpu = float("inf")
        for _ in range(repeat):
            out = None  # the previous run's result is freed before the next one
            cpu0, t0 = _cpu_s(), time.perf_counter()
            out = fn()
            best_wall = min(best_wall, time.perf_counter() - t0)
            best_cpu = min(best_cpu, _cpu_s() - cpu0)
        return out, best_wall, best_cpu

    # One untimed warm-up of each (imports, pandera's first-call set-up).
    first = pl.read_parquet(files[0])
    split_valid(first, table, tz, schema)
    split_valid(make_dirty(first, table), table, tz, schema)
    cast_all(first, table, tz).filter(rule)

    fields = ("ours_s", "ours_cpu_s", "bare_s", "bare_cpu_s", "bare_cast_s", "bare_cast_cpu_s")
    totals: dict[str, dict[str, float]] = {
        kind: dict.fromkeys(fields, 0.0) | {"valid_ours": 0, "valid_bare": 0, "quarantined": 0}
        for kind in ("clean", "dirty")
    }
    rows = 0
    load_before = os.getloadavg()[0]
    for f in files:
        clean = pl.read_parquet(f)
        rows += clean.height
        for kind, raw in (("clean", clean), ("dirty", make_dirty(clean, table))):
            tot = totals[kind]
            (valid, quar, _), wall, cpu = timed(lambda raw=raw: split_valid(raw, table, tz, schema))
            tot["ours_s"] += wall
            tot["ours_cpu_s"] += cpu
            tot["valid_ours"] += valid.height
            tot["quarantined"] += quar.height
            del valid, quar

            typed = cast_all(raw, table, tz)
            kept, wall, cpu = timed(lambda typed=typed: typed.filter(rule))
            tot["bare_s"] += wall
            tot["bare_cpu_s"] += cpu
            tot["valid_bare"] += kept.height
            del kept, typed

            _, wall, cpu = timed(lambda raw=raw: cast_all(raw, table, tz).filter(rule))
            tot["bare_cast_s"] += wall
            tot["bare_cast_cpu_s"] += cpu
            del raw
    _emit(
        {
            "partitions": len(files),
            "rows": rows,
            "repeat": repeat,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            **totals["clean"],
            "dirty": totals["dirty"],
            "peak_rss_mb": _peak_rss_mb(),
        }
    )


CASES = {"seed": case_seed, "pipeline": case_pipeline, "validate": case_validate}


# --- the driver -------------------------------------------------------------------------------


def _run_case(case: str, env: dict[str, str], log, **extra: Any) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    log.write(f"\n$ {shlex.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True, check=False
    )
    log.write(proc.stdout)
    log.flush()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"case {case} failed (exit {proc.returncode}); see {log.name}")
    return json.loads(lines[-1])


def _pg_admin(pg_url: str, sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(f"{pg_url}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


def _versions(pg_url: str | None) -> dict[str, str]:
    import dagster
    import pandera
    import polars
    import pyarrow
    import sqlalchemy

    out = {
        "python": platform.python_version(),
        "polars": polars.__version__,
        "pyarrow": pyarrow.__version__,
        "pandera": pandera.__version__,
        "dagster": dagster.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }
    import sqlite3

    out["sqlite"] = sqlite3.sqlite_version
    if pg_url:
        import psycopg
        import sqlalchemy as sa

        out["psycopg"] = psycopg.__version__
        engine = sa.create_engine(f"{pg_url}/postgres")
        with engine.connect() as conn:
            out["postgresql"] = conn.execute(sa.text("SHOW server_version")).scalar_one()
        engine.dispose()
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def _fmt_rate(rows: float, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "n/a"


def _step(steps: dict[str, float], word: str) -> float:
    return next((s for k, s in steps.items() if word in k), float("nan"))


def _cpu_ratio(v: dict[str, Any]) -> str:
    if not v.get("bare_cpu_s"):
        return "n/a"
    return f"{v['ours_cpu_s'] / v['bare_cpu_s']:.1f}x"


def _render_pipeline(results: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    keys = meta.get("keys", ["raw", "validated", "quarantine"])
    lines = [
        "## Ingestion + validation through Dagster",
        "",
        f"One run materializing `{keys[0]}` and `{keys[1]}` (+ `{keys[2]}`) over all "
        f"{meta.get('partitions', '?')} weekly partitions (single-run backfill), in a fresh "
        "process with a fresh SQLite-backed Dagster instance. **seed** = filling the source "
        "with `seed_demo` (not part of ingestion): SQLite by executemany, PostgreSQL by COPY, "
        "then ANALYZE. **run** = wall time of `dg.materialize`; **CPU** = the process's user + "
        "system seconds during the run (all threads; the machine has 2 cores); **raw** / "
        "**validate** = the two steps' durations from the run's event log; **event log** = "
        "time spent storing Dagster's own events (logs, planned and reported materializations "
        "per partition), included in the other times; **peak RSS** = ru_maxrss of the process, "
        f"including ~{meta.get('baseline_rss', 0):.0f} MB of imported Dagster/polars/pandera "
        "before the run; **load** = 1-min load average when the run started (other work on "
        "the machine).",
        "",
        "| rows | backend | seed s | run s | rows/s | CPU s | raw s | validate s "
        "| event log s (events) | peak RSS MB | load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p = r["pipeline"]
        ev = p.get("event_log", {})
        lines.append(
            f"| {r['rows']:,} | {r['backend']} | {r['seed']['seed_s']:.1f} | {p['wall_s']:.1f} "
            f"| {_fmt_rate(r['rows'], p['wall_s'])} | {p['cpu_s']:.1f} "
            f"| {_step(p['steps_s'], 'raw'):.1f} | {_step(p['steps_s'], 'validate'):.1f} "
            f"| {ev.get('seconds', float('nan')):.1f} ({ev.get('events', 0):,}) "
            f"| {p['peak_rss_mb']:,.0f} | {p['load_before']:.1f} |"
        )
    lines.append("")
    return lines


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    piped = [r for r in results if "pipeline" in r]
    lines = [
        "# Ingestion + validation benchmark",
        "",
        f"- date: {meta['date']}",
        f"- machine: {meta['nproc']} cores ({meta['cpu']}), {meta['mem_gb']:.0f} GB RAM, "
        f"{meta['os']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- command: `{meta['command']}`",
        f"- total benchmark time: {meta['total_s'] / 60:.1f} min"
        + (" (seeding included)" if piped else " (validation only, on existing lake data)"),
        "",
    ]
    if piped:
        lines += _render_pipeline(piped, meta)
    lines += [
        "## Validation alone",
        "",
        "Over the raw partitions the run wrote, one partition at a time as the pipeline does: "
        "`split_valid` (cast to contract types, the pandera rules, quarantine with reasons) vs "
        "a bare polars `df.filter(<every contract rule>)` on frames already cast (ranges, "
        "allowed values, non-null, finite floats, `is_duplicated` key), built generically from "
        "the contract. **ratio** = split_valid time / bare filter time (target <= "
        f"{RATIO_TARGET:g}x). **with bad rows**: the same partitions with 0.1% of one ranged "
        "column below its minimum and one duplicated key per partition, so there are "
        "failures to report in every partition. **cast+filter**: the bare filter including "
        "the casts, for reference. Rates from wall time; **CPU ratio** = the same ratio in CPU "
        "seconds (user + system, all threads), which a busy machine disturbs less. With "
        "**repeat** > 1 each measurement ran that many times per partition and the fastest "
        "counts; **load** = 1-min load average at the start.",
        "",
        "| rows | backend | split_valid rows/s | bare filter rows/s | ratio | CPU ratio "
        "| with bad rows: split_valid rows/s | bare filter rows/s | ratio | CPU ratio "
        "| cast+filter rows/s | quarantined (bad rows) | repeat | load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        v = r["validate"]
        d = v["dirty"]
        n = v["rows"]
        lines.append(
            f"| {n:,} | {r['backend']} | {_fmt_rate(n, v['ours_s'])} "
            f"| {_fmt_rate(n, v['bare_s'])} | {v['ours_s'] / v['bare_s']:.1f}x "
            f"| {_cpu_ratio(v)} "
            f"| {_fmt_rate(n, d['ours_s'])} | {_fmt_rate(n, d['bare_s'])} "
            f"| {d['ours_s'] / d['bare_s']:.1f}x | {_cpu_ratio(d)} "
            f"| {_fmt_rate(n, v['bare_cast_s'])} | {d['quarantined']:,} "
            f"| {v.get('repeat', 1)} | {v.get('load_before', float('nan')):.1f} |"
        )
    lines += ["", "## Targets", ""]
    for r in results:
        p, v = r.get("pipeline"), r["validate"]
        d = v["dirty"]
        ratio, ratio_bad = v["ours_s"] / v["bare_s"], d["ours_s"] / d["bare_s"]
        agree = v["valid_ours"] == v["valid_bare"] and d["valid_ours"] == d["valid_bare"]

        def verdict(ok: bool) -> str:
            return "meets" if ok else "MISSES"

        run = (
            f"run {'succeeded' if p['success'] else 'FAILED'}; peak RSS "
            f"{p['peak_rss_mb']:,.0f} MB ({verdict(p['peak_rss_mb'] < RSS_TARGET_MB)} < "
            f"{RSS_TARGET_MB} MB); "
            if p
            else ""
        )
        lines.append(
            f"- {r['rows']:,} rows, {r['backend']}: {run}validation "
            f"{ratio:.1f}x the bare filter ({verdict(ratio <= RATIO_TARGET)} <= "
            f"{RATIO_TARGET:g}x), {ratio_bad:.1f}x with bad rows "
            f"({verdict(ratio_bad <= RATIO_TARGET)}); valid rows of split_valid and the bare "
            f"filter {'agree' if agree else 'DISAGREE'}"
        )
    return "\n".join(lines) + "\n"


def _has_raw_partitions(lake: Path) -> bool:
    from ml_assets.dataset import Dataset
    from ml_assets.storage import Lake

    folder = Path(
        str(Lake(base_path=str(lake)).path(Dataset.build(_contract()).keys.raw[ROLE], None).parent)
    )
    return folder.is_dir() and any(folder.glob("*.parquet"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--out", default="bench/results/ingest.md")
    parser.add_argument("--workdir", help="scratch folder (default: a new temporary one)")
    parser.add_argument(
        "--pg-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL without database; the script creates and drops " + PG_DB,
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir's data")
    parser.add_argument(
        "--validate-only",
        action="store_true",
        help="only the validation comparison, on the lake a previous run left in --workdir "
        "(seeded and ingested first when there is none; the data is kept)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time each validation measurement this many times per partition, keep the fastest",
    )
    # internal: one measured case in this (fresh) process
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--case-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        CASES[args.case](args)
        return 0

    command = shlex.join(["python", *[a for a in sys.argv if a]])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ingest_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    keep = args.keep or args.validate_only
    log_path = workdir / "bench.log"
    print(f"workdir {workdir}; case logs in {log_path}")
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    uses_pg = "postgresql" in args.backends and not args.validate_only
    meta: dict[str, Any] = {}
    with log_path.open("a") as log:
        for backend in args.backends:
            pg_created = False
            try:
                for rows in args.rows:
                    case_dir = workdir / f"{backend}-{rows}"
                    lake = case_dir / "lake"
                    url = (
                        f"sqlite:///{case_dir / 'source.sqlite'}"
                        if backend == "sqlite"
                        else f"{args.pg_url}/{PG_DB}"
                    )
                    dagster_home = case_dir / "dagster_home"
                    env = {
                        **os.environ,
                        "ML_ASSETS_HOME": str(case_dir / "home"),
                        "ML_ASSETS_SOURCE_URL": url,
                        "ML_ASSETS_LAKE": str(lake),
                        "DAGSTER_HOME": str(dagster_home),
                        "PYTHONUNBUFFERED": "1",
                    }
                    env.pop("ML_ASSETS_SOURCE_URL_OVERRIDE", None)
                    result: dict[str, Any] = {"backend": backend, "rows": rows}
                    if args.validate_only and _has_raw_partitions(lake):
                        print(f"[{backend} {rows:,}] reusing the raw partitions in {lake}")
                    else:
                        if backend == "postgresql" and not pg_created:
                            _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{PG_DB}"')
                            _pg_admin(args.pg_url, f'CREATE DATABASE "{PG_DB}"')
                            pg_created = True
                        shutil.rmtree(case_dir, ignore_errors=True)
                        dagster_home.mkdir(parents=True)
                        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
                        print(f"[{backend} {rows:,}] seeding ...", flush=True)
                        seed = _run_case("seed", env, log, url=url, case_rows=rows)
                        print(f"[{backend} {rows:,}] seeded in {seed['seed_s']:.1f} s", flush=True)
                        pipe = _run_case("pipeline", env, log)
                        print(
                            f"[{backend} {rows:,}] pipeline {pipe['wall_s']:.1f} s, peak RSS "
                            f"{pipe['peak_rss_mb']:,.0f} MB, steps {pipe['steps_s']}",
                            flush=True,
                        )
                        if not pipe["success"]:
                            raise RuntimeError(f"the pipeline run failed; see {log_path}")
                        if not args.validate_only:
                            meta["partitions"] = pipe["partitions"]
                            meta["keys"] = [
                                pipe["raw_key"],
                                pipe["validated_key"],
                                pipe["quarantine_key"],
                            ]
                            meta["baseline_rss"] = pipe["rss_before_mb"]
                            result.update(seed=seed, pipeline=pipe)
                            result["quarantine_key"] = pipe["quarantine_key"]
                    val = _run_case("validate", env, log, lake=lake, repeat=args.repeat)
                    print(
                        f"[{backend} {rows:,}] split_valid {val['ours_s']:.2f} s "
                        f"({val['dirty']['ours_s']:.2f} s with bad rows), bare filter "
                        f"{val['bare_s']:.2f} s ({val['dirty']['bare_s']:.2f} s)",
                        flush=True,
                    )
                    result["validate"] = val
                    results.append(result)
                    if not keep:
                        shutil.rmtree(case_dir, ignore_errors=True)
            finally:
                if pg_created and not args.keep:  # the lake is what a rerun reuses
                    _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{PG_DB}"')
    meta.update(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        nproc=len(os.sched_getaffinity(0)),
        cpu=_cpu(),
        mem_gb=_mem_gb(),
        os=f"{platform.system()} {platform.release()}",
        versions=_versions(args.pg_url if uses_pg else None),
        command=command,
        total_s=time.perf_counter() - started,
    )
    text = render(results, meta)
    (workdir / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print()
    print(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
