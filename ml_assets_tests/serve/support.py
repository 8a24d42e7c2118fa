"""Real fixtures for the serving tests: the shared ones live in :mod:`ml_assets.testing` (the
serving bench uses them too) and are re-exported here; the rest are test-only. No mocks.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ml_assets.testing import (
    AS_OF,
    BENTOML,
    CUTOFF,
    DATASET,
    Champion,
    ServerProcess,
    car_loan,
    demo_tables,
    entity_records,
    feature_records,
    feature_table,
    free_port,
    proto_records,
    seed_online_store,
    serve_env,
    server_home,
    start_server,
    train_champion,
    wait_until,
)

__all__ = [
    "AS_OF",
    "BENTOML",
    "BENTOS",
    "CUTOFF",
    "DATASET",
    "REPO",
    "Champion",
    "ServerProcess",
    "car_loan",
    "demo_tables",
    "entity_records",
    "feature_records",
    "feature_table",
    "fill",
    "free_port",
    "listening_addresses",
    "proto_label",
    "proto_records",
    "seed_online_store",
    "serve_env",
    "server_home",
    "server_processes",
    "start_server",
    "tmpfs",
    "train_champion",
    "wait_until",
    "worker_pids",
    "write_json",
]

REPO = Path(__file__).resolve().parents[2]
BENTOS = REPO / "bentos"


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def proto_label(value: Any) -> Any:
    """The Python value of a ``ml_assets.serving.v1.Value`` (None for null)."""
    kind = value.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(value, kind)


def server_processes(server: ServerProcess) -> list[Any]:
    """The supervisor (``bentoml serve``) and its descendants, as psutil processes."""
    import psutil

    root = psutil.Process(server.proc.pid)
    return [root, *root.children(recursive=True)]


def worker_pids(server: ServerProcess) -> list[int]:
    """The pids of the server's HTTP/gRPC worker processes (children running BentoML's worker
    entry point)."""
    import psutil

    out = []
    for p in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if any("_bentoml_impl.worker" in part for part in p.cmdline()):
                out.append(p.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def listening_addresses(server: ServerProcess, port: int) -> set[str]:
    """The local addresses the server's processes listen on at ``port`` (TCP; IPv4-mapped IPv6
    addresses as their IPv4 address)."""
    import psutil

    found: set[str] = set()
    for p in server_processes(server):
        try:
            conns = p.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
                # grpcio binds 127.0.0.1 on a dual-stack socket: ::ffff:127.0.0.1 is the same
                found.add(c.laddr.ip.removeprefix("::ffff:"))
    return found


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (needs root), unmounted afterwards: a disk that fills."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill the filesystem of ``disk`` with one file until it refuses more (ENOSPC)."""
    import errno

    filler = disk / "filler.bin"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler
