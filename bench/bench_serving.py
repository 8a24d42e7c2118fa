"""Serving bench: the ml_assets Bento over HTTP and gRPC against ``mlflow models serve``.

One run, side by side, loopback only, load from h2load (Debian ``nghttp2-client``; C):

* the floor: in-process CatBoost ``predict_proba`` on one row (and the in-process serving core:
  validation + predict);
* the built Bento (``bentoml serve <tag>``) with 1 and 2 workers, validation and prediction
  logging on: HTTP ``POST /v1/predict`` (h2load ``--h1``) and gRPC ``Predictor/Predict``
  (h2load over h2c with gRPC framing; success checked on the server's own gRPC status counters,
  since gRPC errors travel in HTTP 200 trailers);
* ``mlflow models serve -m models:/car_loan/1 --env-manager local`` with 1 and 2 workers.

Single-row latency p50/p99 at concurrency 1 (from h2load's per-request log), requests/s at
concurrency 8 and 32, rows/s for 100-row requests at concurrency 1 and 8. Every h2load run is
bounded in count (``-n``) and time (a timeout). Rounds are interleaved across the servers, the
median round is reported. The model is a real CatBoost classifier on the car-loan demo data.

    .venv/bin/python bench/bench_serving.py                 # 3 rounds, prints a markdown table
    .venv/bin/python bench/bench_serving.py --rounds 1 --quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ml_assets import testing

TARGETS = {
    "http_p50_ms": 1.0,
    "http_p99_ms": 2.0,
    "c8_vs_mlflow": 2.0,
    "c32_p99_ms": 50.0,
    "batch_rows_s": 60_000,
    "grpc_p50_ms": 0.8,
}


@dataclass
class Run:
    """One h2load run."""

    requests: int
    seconds: float
    ok: int
    latencies_us: list[int] = field(repr=False, default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies_us)
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else float("nan")


@dataclass
class Server:
    name: str
    kind: str  # "bento" | "mlflow"
    workers: int
    proc: subprocess.Popen
    http_port: int
    grpc_port: int = 0
    log: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


# --- load ----------------------------------------------------------------------------------------


def h2load(url: str, body: Path, *, c: int, n: int, grpc: bool, timeout: float, tmp: Path) -> Run:
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)
    cmd = ["h2load", "-n", str(max(n, c)), "-c", str(c), "-m", "1", "-d", str(body)]
    cmd += ["--log-file", str(log)]
    if grpc:
        cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    else:
        cmd += ["--h1", "-H", "content-type: application/json"]
    cmd.append(url)
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False).stdout
    elapsed = time.perf_counter() - started
    seconds = elapsed
    found = re.search(r"finished in ([\d.]+)(us|ms|s),", out)
    if found:
        seconds = float(found.group(1)) / {"us": 1e6, "ms": 1e3, "s": 1.0}[found.group(2)]
    ok = 0
    for line in out.splitlines():
        if line.startswith("status codes:"):
            ok = int(line.split()[2])
    lat: list[int] = []
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith("2"):
                lat.append(int(parts[2]))
    return Run(requests=len(lat) or ok, seconds=seconds, ok=ok, latencies_us=lat)


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_statuses(server: Server) -> dict[str, float]:
    """The server's gRPC answers by status so far (its own counters, summed over workers)."""
    text = httpx.get(f"{server.base}/metrics", timeout=30, trust_env=False).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ml_assets_requests_total") and 'protocol="grpc"' in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            out[status] = out.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


# --- servers -------------------------------------------------------------------------------------


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll ``url`` until it answers 200; fail at once if the server exits."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(url, timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    testing.wait_until(
        ready, timeout, interval=0.3, what=lambda: f"{url}:\n{log.read_text()[-3000:]}"
    )


def start_bento(tag: str, env: dict, workers: int, tmp: Path, nice: int) -> Server:
    log = tmp / f"bento-{workers}w.log"
    # one BENTOML_HOME per server: `bentoml serve` wipes the home's Prometheus directory
    home = testing.server_home(Path(env["BENTOML_HOME"]), tmp / f"bentoml-{workers}w")
    env = {**env, "BENTOML_HOME": str(home)}
    proc = testing.start_server(tag, env, log, cwd=tmp, workers=workers)
    if nice:
        os.setpriority(os.PRIO_PGRP, proc.proc.pid, nice)
    proc.wait_ready(180)
    return Server(
        f"ml_assets Bento, {workers} worker{'s' * (workers > 1)}",
        "bento",
        workers,
        proc.proc,
        proc.http_port,
        proc.grpc_port,
        log,
    )


def start_mlflow(tracking_uri: str, version: str, workers: int, tmp: Path, nice: int) -> Server:
    port = testing.free_port()
    log = tmp / f"mlflow-{workers}w.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "NO_PROXY": "127.0.0.1"}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    bin_dir = Path(sys.executable).parent  # mlflow execs `uvicorn` from PATH
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    mlflow = bin_dir / "mlflow"
    cmd = [str(mlflow), "models", "serve", "-m", f"models:/car_loan/{version}"]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    if nice:
        os.setpriority(os.PRIO_PGRP, proc.pid, nice)
    wait_http(f"http://127.0.0.1:{port}/ping", proc, log, 180)
    return Server(
        f"`mlflow models serve`, {workers} worker{'s' * (workers > 1)}",
        "mlflow",
        workers,
        proc,
        port,
        log=log,
    )


def stop(server: Server) -> None:
    import signal

    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)


# --- in process ----------------------------------------------------------------------------------


def in_process(champion: testing.Champion, n: int = 3000) -> dict[str, float]:
    """The floor: CatBoost on one row; and the serving core (validation + predict)."""
    from ml_assets.serve.runtime import InputLayout, ServingRuntime, load_bundle

    rows = champion.holdout.head(100)
    records = testing.feature_records(rows, champion.problem.features)
    with tempfile.TemporaryDirectory() as tmp:
        champion.model.save_model(str(Path(tmp) / "model.cbm"))
        (Path(tmp) / "problem.json").write_text(champion.problem.to_json())
        bundle = load_bundle(tmp, labels={"model_version": champion.version})
    _, spec = testing.car_loan()
    runtime = ServingRuntime(spec, bundle)
    layout = InputLayout(bundle, runtime.features)
    from ml_assets.serve.validation import validate_records

    x1 = layout.matrix(validate_records(runtime.features, records[:1]))
    x100 = layout.matrix(validate_records(runtime.features, records))
    model = champion.model

    def timed(fn: Any, k: int) -> list[float]:
        fn()
        out = []
        for _ in range(k):
            t = time.perf_counter_ns()
            fn()
            out.append((time.perf_counter_ns() - t) / 1e6)
        return sorted(out)

    one = timed(lambda: model.predict_proba(x1, thread_count=1), n)
    core = timed(lambda: runtime.predict(records[:1], request_id="b", protocol="bench"), n)
    hundred = timed(lambda: model.predict_proba(x100, thread_count=1), n // 10)
    core100 = timed(lambda: runtime.predict(records, request_id="b", protocol="bench"), n // 10)
    return {
        "p50": one[len(one) // 2],
        "p99": one[int(len(one) * 0.99)],
        "rps": 1000 / statistics.mean(one),
        "core_p50": core[len(core) // 2],
        "core_p99": core[int(len(core) * 0.99)],
        "rows_s": 100 * 1000 / statistics.median(hundred),
        "core_rows_s": 100 * 1000 / statistics.median(core100),
    }


# --- the bench -----------------------------------------------------------------------------------


def prepare(home: Path, iterations: int) -> tuple[testing.Champion, Any]:
    from ml_assets.serve.bento import build_bento, stage_champion

    champion = testing.train_champion(home, iterations=iterations)
    testing.seed_online_store(f"sqlite:///{home / 'online.sqlite'}")
    staged = stage_champion(champion.tracking, "car_loan", home / "staged")
    built = build_bento(staged, home=home / "bentoml")
    return champion, built


def bodies(champion: testing.Champion, tmp: Path) -> dict[str, Path]:
    from ml_assets.serve import predictor_pb2 as pb
    from ml_assets.train import core

    rows = champion.holdout.head(100)
    records = testing.feature_records(rows, champion.problem.features)
    out = {}
    for name, recs in (("one", records[:1]), ("hundred", records)):
        out[f"json_{name}"] = tmp / f"{name}.json"
        out[f"json_{name}"].write_text(json.dumps({"records": recs}))
        msg = pb.PredictRequest(records=testing.proto_records(recs)).SerializeToString()
        out[f"grpc_{name}"] = tmp / f"{name}.grpc"
        out[f"grpc_{name}"].write_bytes(grpc_frame(msg))
        frame = core.to_pool_frame(rows.head(len(recs)), champion.problem)
        out[f"mlflow_{name}"] = tmp / f"{name}.mlflow.json"
        out[f"mlflow_{name}"].write_text(
            json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})
        )
    keys = testing.entity_records(1, with_time=False)
    out["json_keys"] = tmp / "keys.json"
    out["json_keys"].write_text(json.dumps({"records": keys}))
    return out


LEVELS = (
    ("c1", 1, "one"),
    ("c8", 8, "one"),
    ("c32", 32, "one"),
    ("b1", 1, "hundred"),
    ("b8", 8, "hundred"),
)


def measure(
    server: Server, protocol: str, files: dict[str, Path], counts: dict[str, int], args, tmp: Path
) -> dict[str, Run]:
    results = {}
    for level, c, size in LEVELS:
        if server.kind == "mlflow":
            url, body, grpc = f"{server.base}/invocations", files[f"mlflow_{size}"], False
        elif protocol == "grpc":
            url = f"http://127.0.0.1:{server.grpc_port}/ml_assets.serving.v1.Predictor/Predict"
            body, grpc = files[f"grpc_{size}"], True
        else:
            url, body, grpc = f"{server.base}/v1/predict", files[f"json_{size}"], False
        # mlflow serve is ~10x slower: fewer requests keep its runs about as long as ours
        n = counts[level] if server.kind == "bento" else max(c * 20, int(counts[level] * 0.35))
        h2load(url, body, c=c, n=max(c * 20, n // 10), grpc=grpc, timeout=args.timeout, tmp=tmp)
        before = grpc_statuses(server) if grpc else {}
        run = h2load(url, body, c=c, n=n, grpc=grpc, timeout=args.timeout, tmp=tmp)
        if grpc:  # gRPC failures are HTTP 200 with grpc-status in trailers: count the OKs
            after = grpc_statuses(server)
            delta = {
                k: int(v - before.get(k, 0)) for k, v in after.items() if v != before.get(k, 0)
            }
            run.ok = delta.pop("OK", 0)
            if delta:
                print(f"  ! {server.name} gRPC {level}: other statuses {delta}", file=sys.stderr)
        if run.ok != n:
            print(f"  ! {server.name} {protocol} {level}: {run.ok}/{n} succeeded", file=sys.stderr)
        results[level] = run
        print(
            f"  {server.name:34s} {protocol:4s} {level:3s} {run.rps:9.0f} req/s "
            f"p50 {run.pct(0.5):7.3f} ms  p99 {run.pct(0.99):7.3f} ms  ok {run.ok}/{n}",
            file=sys.stderr,
        )
    if server.kind == "bento" and protocol == "http":  # predict by keys, for information
        url, body = f"{server.base}/v1/predict_by_keys", files["json_keys"]
        n = counts["c1"] // 2
        h2load(url, body, c=1, n=n // 10, grpc=False, timeout=args.timeout, tmp=tmp)
        results["k1"] = run = h2load(url, body, c=1, n=n, grpc=False, timeout=args.timeout, tmp=tmp)
        print(
            f"  {server.name:34s} keys k1  {run.rps:9.0f} req/s p50 {run.pct(0.5):7.3f} ms  "
            f"p99 {run.pct(0.99):7.3f} ms  ok {run.ok}/{n}",
            file=sys.stderr,
        )
    return results


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def fmt(run: Run) -> str:
    return f"{run.rps:,.0f} ({run.pct(0.5):.2f}/{run.pct(0.99):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=300, help="CatBoost iterations")
    parser.add_argument("--quick", action="store_true", help="fewer requests per run")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per h2load run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness for the servers (e.g. -5 on a busy box)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        sys.exit("h2load not found: apt-get install -y nghttp2-client")
    scale = 0.3 if args.quick else 1.0
    counts = {
        k: int(v * scale)
        for k, v in {"c1": 4000, "c8": 12000, "c32": 12000, "b1": 1500, "b8": 3000}.items()
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    home = tmp / "home"
    home.mkdir()
    servers: list[Server] = []
    try:
        print(f"preparing in {tmp} ...", file=sys.stderr)
        champion, built = prepare(home, args.iterations)
        files = bodies(champion, tmp)
        floor = in_process(champion)
        env = testing.serve_env(
            home, built.home, ML_ASSETS_ONLINE_URL=f"sqlite:///{home / 'online.sqlite'}"
        )
        for w in args.workers:
            servers.append(start_bento(built.bento_tag, env, w, tmp, args.nice))
        if not args.skip_mlflow:
            for w in args.workers:
                servers.append(
                    start_mlflow(
                        champion.tracking.resolved_tracking_uri(),
                        champion.version,
                        w,
                        tmp,
                        args.nice,
                    )
                )
        print(f"loadavg before: {os.getloadavg()}", file=sys.stderr)
        rounds: dict[tuple[str, str], list[dict[str, Run]]] = {}
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            for s in servers:
                for protocol in ("http", "grpc") if s.kind == "bento" else ("http",):
                    rounds.setdefault((s.name, protocol), []).append(
                        measure(s, protocol, files, counts, args, tmp)
                    )
        load_after = os.getloadavg()
    finally:
        for s in servers:
            stop(s)
    # --- report --------------------------------------------------------------------------------
    best = {
        key: {lvl: median_run([rr[lvl] for rr in rs]) for lvl in rs[0]}
        for key, rs in rounds.items()
    }
    print(f"\n## Serving bench ({dt.date.today()}, {platform.node()}, {os.cpu_count()} cores)\n")
    print(
        f"car_loan CatBoost ({champion.model.tree_count_} trees, {len(champion.problem.features)} "
        f"features); medians of {args.rounds} round(s); load average after: "
        f"{load_after[0]:.2f}. Cells: req/s (p50/p99 ms).\n"
    )
    print("| server | c=1 | c=8 | c=32 | 100-row requests, rows/s c=1 / c=8 |")
    print("|---|---|---|---|---|")
    print(
        f"| in-process CatBoost predict_proba, 1 row (floor) | {floor['rps']:,.0f} "
        f"({floor['p50']:.3f}/{floor['p99']:.3f}) | | | {floor['rows_s']:,.0f} |"
    )
    print(
        f"| in-process serving core (validation + predict) | {1000 / floor['core_p50']:,.0f} "
        f"({floor['core_p50']:.3f}/{floor['core_p99']:.3f}) | | | {floor['core_rows_s']:,.0f} |"
    )
    for (name, protocol), res in best.items():
        label = f"{name}, {'gRPC' if protocol == 'grpc' else 'HTTP'}"
        rows = f"{res['b1'].rps * 100:,.0f} / {res['b8'].rps * 100:,.0f}"
        print(f"| {label} | {fmt(res['c1'])} | {fmt(res['c8'])} | {fmt(res['c32'])} | {rows} |")
    for (name, _), res in best.items():
        if "k1" in res:
            print(
                f"\n{name}: `POST /v1/predict_by_keys`, one entity record (features by the feature "
                f"code + online-store lookup), c=1: {fmt(res['k1'])}"
            )
    # --- targets -------------------------------------------------------------------------------
    print("\n### Targets\n")
    bento = {
        w: best.get((f"ml_assets Bento, {w} worker{'s' * (w > 1)}", "http")) for w in args.workers
    }
    grpc = {
        w: best.get((f"ml_assets Bento, {w} worker{'s' * (w > 1)}", "grpc")) for w in args.workers
    }
    mlf = best.get(("`mlflow models serve`, 2 workers", "http"))
    checks = []
    b1 = bento.get(1) or next(iter(bento.values()))
    checks.append(
        ("HTTP single-row p50 <= 1.0 ms (c=1)", b1["c1"].pct(0.5), TARGETS["http_p50_ms"], "<=")
    )
    checks.append(
        ("HTTP single-row p99 <= 2 ms (c=1)", b1["c1"].pct(0.99), TARGETS["http_p99_ms"], "<=")
    )
    if mlf and bento.get(2):
        ratio = bento[2]["c8"].rps / mlf["c8"].rps
        checks.append(
            ("req/s at c=8, 2 workers >= 2x mlflow serve", ratio, TARGETS["c8_vs_mlflow"], ">=")
        )
    for w, res in bento.items():
        if res:
            checks.append(
                (
                    f"p99 at c=32 <= 50 ms ({w} worker(s))",
                    res["c32"].pct(0.99),
                    TARGETS["c32_p99_ms"],
                    "<=",
                )
            )
    top = bento.get(2) or b1
    rows_s = max(top["b1"].rps, top["b8"].rps) * 100
    checks.append(("batch-100 >= 60k rows/s", rows_s, TARGETS["batch_rows_s"], ">="))
    g1 = grpc.get(1) or next(iter(grpc.values()))
    checks.append(
        ("gRPC single-row p50 <= 0.8 ms (c=1)", g1["c1"].pct(0.5), TARGETS["grpc_p50_ms"], "<=")
    )
    for text, value, bound, op in checks:
        ok = value <= bound if op == "<=" else value >= bound
        print(f"- {'MET' if ok else 'MISSED'}: {text}: {value:,.3f}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"\nkept {tmp}", file=sys.stderr)


if __name__ == "__main__":
    main()
