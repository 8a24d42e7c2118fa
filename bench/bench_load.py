"""Sustained load and overload on the built Bento: hold a steady rate, shed beyond capacity, recover.

One run against ``bentoml serve`` of the car-loan Bento (2 workers, validation and the prediction
log on, HTTP ``POST /v1/predict``, one record per request), load from h2load (C, open loop with
``--rps`` per client, bounded by ``-D`` seconds):

1. **capacity**: closed loop at concurrency 32 for a few seconds: the most requests/s it serves;
2. **steady**: 60 s at concurrency 32 at half that rate: every request must be 200 and p99
   within the serving target (50 ms at c=32);
3. **overload**: as many concurrent connections as twice the service's in-flight limit
   (``ServeConfig.max_concurrency``, 64), each asking for twice its share of the capacity: the
   service must shed with fast 503s (their p99 next to the 200s'), not queue, and keep its
   memory flat (workers' RSS sampled every second);
4. **recovery**: the steady phase again right after: every request 200 again, with no restart.

    .venv/bin/python bench/bench_load.py                 # prints a markdown table
    .venv/bin/python bench/bench_load.py --steady-seconds 20 --overload-seconds 15   # quicker

h2load: ``apt-get install -y nghttp2-client``. Memory is the sum of the server's processes'
RSS (supervisor and workers) from ``/proc``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_serving

from ml_assets import testing
from ml_assets.serve.config import ServeConfig

P99_TARGET_MS = 50.0
"""The serving target at concurrency 32 (BENCHMARKS.md, "Serving")."""


@dataclass
class Phase:
    """One h2load run's outcome."""

    name: str
    clients: int
    offered_rps: float
    seconds: float
    status: dict[str, int] = field(default_factory=dict)
    ok_ms: list[float] = field(default_factory=list)
    shed_ms: list[float] = field(default_factory=list)
    failed: int = 0
    rss_mb: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.status.values()) + self.failed

    def pct(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        return (
            statistics.quantiles(values, n=100, method="inclusive")[q - 1]
            if len(values) > 1
            else values[0]
        )


def server_rss_mb(pid: int) -> float:
    """Sum of RSS over the server's process tree (supervisor and workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 2**20


def run_phase(
    name: str,
    url: str,
    body: Path,
    *,
    clients: int,
    seconds: float,
    rps_per_client: float | None,
    server_pid: int,
    tmp: Path,
) -> Phase:
    """One h2load run, open loop when ``rps_per_client`` is set, with RSS sampled each second."""
    log = tmp / f"{name}.log"
    log.unlink(missing_ok=True)
    cmd = ["h2load", "--h1", "-c", str(clients), "-m", "1", "-d", str(body)]
    cmd += ["-D", str(int(seconds)), "-t", "1", "--log-file", str(log)]
    cmd += ["-H", "content-type: application/json"]
    if rps_per_client:
        cmd += ["--rps", str(max(1, round(rps_per_client)))]
    cmd.append(url)
    phase = Phase(name, clients, (rps_per_client or 0) * clients, seconds)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            phase.rss_mb.append(server_rss_mb(server_pid))

    sampler = threading.Thread(target=sample, daemon=True)
    phase.rss_mb.append(server_rss_mb(server_pid))
    sampler.start()
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 120, check=False
        ).stdout
    finally:
        done.set()
        sampler.join()
    phase.rss_mb.append(server_rss_mb(server_pid))
    for line in out.splitlines():
        if line.startswith("requests:"):
            parts = line.replace(",", "").split()
            # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
            # ("failed" counts non-2xx answers too: only errored and timed out ones got none)
            phase.failed = int(parts[parts.index("errored") - 1]) + int(
                parts[parts.index("timeout") - 1]
            )
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            status, ms = parts[1], int(parts[2]) / 1000
            phase.status[status] = phase.status.get(status, 0) + 1
            if status.startswith("2"):
                phase.ok_ms.append(ms)
            elif status == "503":
                phase.shed_ms.append(ms)
    return phase


def report(phases: list[Phase], capacity: float, args, load: tuple) -> str:
    lines = [
        "| phase | connections | offered req/s | answered req/s | 200 | 503 | other / failed "
        "| p50 / p99 ms (200) | p50 / p99 ms (503) | server RSS MB start / max / end |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for p in phases:
        ok = sum(v for k, v in p.status.items() if k.startswith("2"))
        shed = p.status.get("503", 0)
        other = p.total - ok - shed
        offered = f"{p.offered_rps:,.0f}" if p.offered_rps else "closed loop"
        lines.append(
            f"| {p.name} | {p.clients} | {offered} | {p.total / p.seconds:,.0f} | {ok:,} | "
            f"{shed:,} | {other:,} | {p.pct(p.ok_ms, 50):.2f} / {p.pct(p.ok_ms, 99):.2f} | "
            f"{p.pct(p.shed_ms, 50):.2f} / {p.pct(p.shed_ms, 99):.2f} | {p.rss_mb[0]:.0f} / {max(p.rss_mb):.0f} / "
            f"{p.rss_mb[-1]:.0f} |"
        )
    steady = next(p for p in phases if p.name == "steady")
    recovery = next(p for p in phases if p.name == "recovery")
    overload = next(p for p in phases if p.name == "overload")
    verdict = [
        f"steady: {'zero' if steady.total == steady.status.get('200', 0) else 'SOME'} errors, "
        f"p99 {steady.pct(steady.ok_ms, 99):.1f} ms (target <= {P99_TARGET_MS:.0f})",
        f"overload: {overload.status.get('503', 0):,} shed with 503 "
        f"(p99 {overload.pct(overload.shed_ms, 99):.1f} ms), RSS "
        f"{overload.rss_mb[0]:.0f} -> {max(overload.rss_mb):.0f} MB",
        f"recovery: {'zero' if recovery.total == recovery.status.get('200', 0) else 'SOME'} "
        f"errors, p99 {recovery.pct(recovery.ok_ms, 99):.1f} ms",
    ]
    head = (
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
        f"before {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; capacity (closed loop, c=32): "
        f"{capacity:,.0f} req/s; workers {args.workers}, max_concurrency {args.max_concurrency}"
    )
    return "\n".join([head, "", *lines, "", *(f"- {v}" for v in verdict)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=300, help="CatBoost iterations")
    parser.add_argument("--steady-seconds", type=float, default=60)
    parser.add_argument("--overload-seconds", type=float, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.max_concurrency = ServeConfig().max_concurrency
    if shutil.which("h2load") is None:
        sys.exit("h2load not found: apt-get install -y nghttp2-client")
    tmp = Path(tempfile.mkdtemp(prefix="bench_load_"))
    home = tmp / "home"
    home.mkdir()
    print(f"preparing in {tmp} ...", file=sys.stderr)
    champion, built = bench_serving.prepare(home, args.iterations)
    files = bench_serving.bodies(champion, tmp)
    env = testing.serve_env(
        home,
        built.home,
        ML_ASSETS_ONLINE_URL=f"sqlite:///{home / 'online.sqlite'}",
    )
    server = bench_serving.start_bento(built.bento_tag, env, args.workers, tmp, 0)
    url = f"{server.base}/v1/predict"
    body = files["json_one"]
    load = os.getloadavg()
    try:
        run_phase("warm-up", url, body, clients=8, seconds=5, rps_per_client=None,
                  server_pid=server.proc.pid, tmp=tmp)  # fmt: skip
        probe = run_phase("capacity", url, body, clients=32, seconds=10, rps_per_client=None,
                          server_pid=server.proc.pid, tmp=tmp)  # fmt: skip
        capacity = probe.total / probe.seconds
        steady_rps = capacity / 2
        phases = [probe]
        phases.append(
            run_phase("steady", url, body, clients=32, seconds=args.steady_seconds,
                      rps_per_client=steady_rps / 32, server_pid=server.proc.pid, tmp=tmp)
        )  # fmt: skip
        clients = 2 * args.max_concurrency
        phases.append(
            run_phase("overload", url, body, clients=clients, seconds=args.overload_seconds,
                      rps_per_client=2 * capacity / clients, server_pid=server.proc.pid,
                      tmp=tmp)
        )  # fmt: skip
        phases.append(
            run_phase("recovery", url, body, clients=32, seconds=args.steady_seconds,
                      rps_per_client=steady_rps / 32, server_pid=server.proc.pid, tmp=tmp)
        )  # fmt: skip
        alive = server.proc.poll() is None
    finally:
        bench_serving.stop(server)
    text = report(phases, capacity, args, load)
    text += f"\n- the server process stayed up throughout: {'yes' if alive else 'NO'}\n"
    print(text)
    if args.out:
        args.out.write_text(
            "# Sustained load and overload (bench/bench_load.py)\n\n"
            f"`python bench/bench_load.py {' '.join(sys.argv[1:])}`\n\n{text}"
        )


if __name__ == "__main__":
    main()
