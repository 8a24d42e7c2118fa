"""Per-stage cost on the production profile against the embedded default, side by side.

For each size, the car-loan demo rows resampled to N rows are seeded ONCE into a PostgreSQL
source database that both profiles read, then the README's main job (``ml-assets run
car_loan``: pipeline over every weekly partition as one run, train, score) runs:

- **embedded**: the default: in-process execution, the lake on local disk, Dagster and MLflow on
  SQLite; one CLI process per job, its peak RSS (VmHWM: where the steps run) is the job's;
- **production**: ``ML_ASSETS_PROFILE=production`` with everything private to this run (its own
  databases on the local server, moto's S3 server as the object store, the MLflow tracking
  server, the Dagster webserver and daemon, two Celery workers on RabbitMQ): the steps run in the
  Celery workers (``--pool=solo``: in the worker process), so the job's peak RSS is the highest
  worker VmHWM, reset before each job (``/proc/<pid>/clear_refs``).

Per job: wall time (the CLI's own line: submission, queueing and execution), the sum of its
steps' durations by stage (Dagster's step stats), peak RSS; per stage: bytes written to the lake
(parquet, the same data in both, so this is what the object store moves per write) and per
partition. Ratios production / embedded are per job.

    .venv/bin/python bench/bench_production.py --rows 1000000 10000000 --out bench/results/production.md

``--train-iterations`` caps CatBoost's rounds for both profiles alike (the training time at 10M
rows is CatBoost's, not the profile's). Everything is torn down afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATASET = "car_loan"
JOBS = ("pipeline", "train", "score")
CLI = str(Path(sys.executable).parent / "ml-assets")
LINE = re.compile(rf"^{DATASET}_(pipeline|train|score): .*(succeeded|FAILED) in ([0-9.]+) s")

# The measuring wrapper: runs the CLI in this process and reports its peak RSS on stderr.
WRAP = """
import sys
sys.argv = ["ml-assets", *sys.argv[1:]]
try:
    from ml_assets.cli import main
    code = main()
finally:
    with open("/proc/self/status") as fh:
        hwm = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))
    sys.stderr.write(f"\\nBENCH_PEAK_KB={hwm}\\n")
sys.exit(code)
"""

STEP_STATS = """
import json, dagster as dg
from ml_assets.execution import prepare_dagster_home
prepare_dagster_home()
out = {}
with dg.DagsterInstance.get() as instance:
    for run in instance.get_runs(limit=50):
        job = run.job_name.removeprefix(DATASET + "_")
        for st in instance.get_run_step_stats(run.run_id):
            if st.start_time and st.end_time:
                stage = st.step_key.split("__")[-1].split(".")[0]
                key = f"{job}:{stage}"
                out[key] = out.get(key, 0.0) + st.end_time - st.start_time
print(json.dumps(out))
""".replace("DATASET", repr(DATASET))

LAKE_BYTES = """
import json
from upath import UPath
from ml_assets import settings
root = UPath(settings.current().lake_path) / DATASET
out = {}
for stage in root.iterdir():
    files = [p for p in stage.rglob("*.parquet")]
    out[stage.name] = [sum(p.stat().st_size for p in files), len(files)]
print(json.dumps(out))
""".replace("DATASET", repr(DATASET))


def _python(code: str, env: dict[str, str], timeout: float = 600) -> Any:
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cli(args: list[str], env: dict[str, str], log: Any, timeout: float = 7200) -> str:
    log.write(f"\n$ ml-assets {shlex.join(args)}\n")
    log.flush()
    proc = subprocess.run(
        [sys.executable, "-c", WRAP, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    log.write(proc.stdout + proc.stderr)
    log.flush()
    if proc.returncode != 0:
        raise RuntimeError(f"ml-assets {' '.join(args)} failed; see {log.name}")
    return proc.stdout + proc.stderr


def _peak_mb(out: str) -> float:
    m = re.findall(r"BENCH_PEAK_KB=(\d+)", out)
    return int(m[-1]) / 1024 if m else float("nan")


def _worker_pids(home: Path) -> list[int]:
    """The Celery workers' processes (the pid files' process groups: main process + children)."""
    pids = []
    for pid_file in sorted((home / "services").glob("celery-worker*.pid")):
        pgid = int(pid_file.read_text().split()[0])
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if os.getpgid(int(proc.name)) == pgid:
                        pids.append(int(proc.name))
                except (ProcessLookupError, PermissionError):
                    continue
    return pids


def _reset_hwm(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def _hwm_mb(pids: list[int]) -> float:
    best = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            continue
    return best / 1024


def run_profile(
    name: str, env: dict[str, str], home: Path, log: Any, train_config: Path | None
) -> dict[str, Any]:
    """The three jobs on one profile; per job wall, peak RSS; step stats; lake bytes."""
    jobs: dict[str, dict[str, float]] = {}
    for job in JOBS:
        args = ["run", DATASET, "--only", job]
        if job == "train" and train_config is not None:
            args += ["--config", str(train_config)]
        pids = _worker_pids(home) if name == "production" else []
        _reset_hwm(pids)
        started = time.perf_counter()
        out = _cli(args, env, log)
        wall = time.perf_counter() - started
        took = [float(m.group(3)) for m in map(LINE.match, out.splitlines()) if m]
        jobs[job] = {
            "cli_s": wall,
            "job_s": sum(took) if took else float("nan"),
            "peak_mb": _hwm_mb(pids) if pids else _peak_mb(out),
        }
    return {"jobs": jobs, "steps": _python(STEP_STATS, env), "lake": _python(LAKE_BYTES, env)}


def bench_size(rows: int, work: Path, log: Any, iterations: int | None) -> dict[str, Any]:
    from ml_assets.testing import production_profile

    profile = production_profile(work / "production", uuid.uuid4().hex[:8])
    prod = profile.env
    embedded = {
        k: v for k, v in prod.items() if not k.startswith(("ML_ASSETS_", "MLFLOW_", "DAGSTER_"))
    }
    embedded.update(
        {
            "ML_ASSETS_HOME": str(work / "embedded"),
            "ML_ASSETS_SOURCE_URL": prod["ML_ASSETS_SOURCE_URL"],
        }
    )
    train_config = None
    if iterations:
        train_config = work / "train.yaml"
        train_config.write_text(
            f"train:\n  ops:\n    {DATASET}__model:\n      config:\n"
            f"        iterations: {iterations}\n"
        )
    result: dict[str, Any] = {"rows": rows}
    try:
        t0 = time.perf_counter()
        _cli(["services", "up"], prod, log, timeout=600)
        result["services_up_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _cli(["seed", "--dataset", DATASET, "--rows", str(rows)], prod, log)
        result["seed_s"] = time.perf_counter() - t0
        result["embedded"] = run_profile("embedded", embedded, work / "embedded", log, train_config)
        result["production"] = run_profile(
            "production", prod, work / "production", log, train_config
        )
    finally:
        subprocess.run([CLI, "services", "down"], env=prod, cwd=REPO, timeout=300, check=False)
        profile.drop_databases()
    return result


def _fmt_mb(value: float) -> str:
    return f"{value:,.0f}"


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Production profile vs embedded default (bench/bench_production.py)",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']}, {meta['cpus']} cores, load average before {meta['load']}, "
        f"train iterations {meta['iterations'] or 'default'}",
        "",
        "| rows | job | embedded s | production s | production / embedded | embedded peak MB "
        "| production peak MB (worker) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for job in JOBS:
            e, p = r["embedded"]["jobs"][job], r["production"]["jobs"][job]
            lines.append(
                f"| {r['rows']:,} | {job} | {e['cli_s']:.1f} | {p['cli_s']:.1f} | "
                f"{p['cli_s'] / e['cli_s']:.2f}x | {_fmt_mb(e['peak_mb'])} | "
                f"{_fmt_mb(p['peak_mb'])} |"
            )
    lines += [
        "",
        "Steps' summed durations by stage (Dagster step stats; the rest of a job's wall time is "
        "planning, submission, queueing and process start-up):",
        "",
        "| rows | job:stage | embedded s | production s |",
        "|---:|---|---:|---:|",
    ]
    for r in results:
        keys = sorted(set(r["embedded"]["steps"]) | set(r["production"]["steps"]))
        for k in keys:
            e = r["embedded"]["steps"].get(k, float("nan"))
            p = r["production"]["steps"].get(k, float("nan"))
            lines.append(f"| {r['rows']:,} | {k} | {e:.1f} | {p:.1f} |")
    lines += [
        "",
        "Lake bytes written per stage (the object store's writes; reads are the same files "
        "again downstream):",
        "",
        "| rows | stage | files | MB embedded | MB production | MB per partition |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for stage in sorted(r["production"]["lake"]):
            pb, files = r["production"]["lake"][stage]
            eb = r["embedded"]["lake"].get(stage, [float("nan"), 0])[0]
            per = pb / files / 1e6 if files else float("nan")
            lines.append(
                f"| {r['rows']:,} | {stage} | {files} | {eb / 1e6:.1f} | {pb / 1e6:.1f} | "
                f"{per:.2f} |"
            )
    lines += [
        "",
        "Seeding the PostgreSQL source (once per size, both profiles read it): "
        + ", ".join(f"{r['rows']:,} rows {r['seed_s']:.0f} s" for r in results)
        + "; `ml-assets services up`: "
        + ", ".join(f"{r['services_up_s']:.0f} s" for r in results)
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--train-iterations", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("ML_ASSETS_HOME", tempfile.mkdtemp(prefix="bench_prod_home_"))
    meta = {
        "command": "python bench/bench_production.py " + shlex.join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "iterations": args.train_iterations,
    }
    results = []
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_production_"))
    log_path = root / "bench_production.log"
    root.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        for rows in args.rows:
            work = root / f"rows_{rows}"
            work.mkdir(parents=True, exist_ok=True)
            results.append(bench_size(rows, work, log, args.train_iterations))
            (root / "results.json").write_text(json.dumps(results, indent=2))
    text = render(results, meta)
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text + f"\nlog: {log_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
