"""The production profile for real: PostgreSQL databases of its own, moto's S3 server, the MLflow
tracking server, RabbitMQ with two Celery workers, the Dagster webserver and daemon, then the
README's main job (a dataset end to end) on it, a backfill fanned out over both workers and
compared with the embedded default's lake, the training-run limit, and the exported Bento
served from the object store. Run alone with ``pytest -m production``.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from ml_assets.testing import (
    PG_SERVER,
    free_port,
    production_profile,
    serve_env,
    start_server,
    wait_until,
)

pytestmark = [
    pytest.mark.production,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.xdist_group("production"),
]

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "ml-assets")
PG = PG_SERVER
DATASET = "car_price"
ROWS = "40000"
STAGES = ("raw_entity", "raw_labels", "validated_entity", "validated_labels", "features")


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a process of the platform in the checkout, its output captured."""
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@dataclass
class Stack:
    """The running profile: its environment and the names it made."""

    env: dict[str, str]
    home: Path
    databases: list[str]
    bucket: str

    def cli(self, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> str:
        """Run ``ml-assets <args>`` on the profile; its output (a failure shows it all)."""
        proc = _run([CLI, *args], env or self.env, timeout)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"ml-assets {' '.join(args)} failed:\n{out[-6000:]}"
        return proc.stdout

    def python(self, code: str, timeout: float = 300) -> str:
        """Run ``code`` in a process on the profile (stdout's last line is its answer)."""
        return _python(code, self.env, timeout)


def _python(code: str, env: dict[str, str], timeout: float = 300) -> str:
    """Run ``code`` in a process with ``env``; the last line of its stdout."""
    proc = _run([sys.executable, "-c", code], env, timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The services up (and the source seeded), for the module; everything torn down after."""
    home = tmp_path_factory.mktemp("production")
    profile = production_profile(home, uuid.uuid4().hex[:8])
    env = profile.env
    s = Stack(env=env, home=home, databases=profile.databases, bucket=profile.bucket)
    try:
        s.cli("services", "up", timeout=300)
        s.cli("seed", "--dataset", DATASET, "--rows", ROWS)
        yield s
    finally:
        groups = [int(p.read_text().split()[0]) for p in (home / "services").glob("*.pid")]
        subprocess.run([CLI, "services", "down"], env=env, cwd=REPO, timeout=120)
        profile.drop_databases()
    # nothing of any service is left running: the Dagster daemon's code server (and its
    # sensor-evaluating child) once outlived the daemon, burning a core after the tests
    from ml_assets.services import group_alive

    left = [g for g in groups if group_alive(g)]
    assert not left, f"`services down` left processes in the process groups {left}"


def _run_facts(stack: Stack, run_ids: list[str]) -> list[dict]:
    """Per run: status, start and end times, and which Celery worker ran each step."""
    code = f"""
import json, dagster as dg
from ml_assets.execution import SubmittedRun, prepare_dagster_home
prepare_dagster_home()
out = []
with dg.DagsterInstance.get() as instance:
    for run_id in {run_ids!r}:
        rec = instance.get_run_record_by_id(run_id)
        run = SubmittedRun.read(instance, run_id)
        out.append({{"status": rec.dagster_run.status.value, "start": rec.start_time,
                     "end": rec.end_time, "workers": run.workers(),
                     "steps": sorted({{e.step_key for e in run.all_events if e.is_step_success}}),
                     "partition": rec.dagster_run.tags.get("dagster/partition")}})
print(json.dumps(out))
"""
    return json.loads(stack.python(code))


def _submit(
    stack: Stack,
    job: str,
    tags: list[dict[str, str]],
    run_config: dict | None = None,
    assets: list[list[str]] | None = None,
):
    """Submit runs of ``job`` (or of its ``assets``) at once, one per tag set, through the
    webserver; their ids, after all have finished."""
    code = f"""
import json, dagster as dg
from ml_assets import execution
execution.prepare_dagster_home()
ids = [execution.submit({job!r}, tags=t, run_config={run_config!r}, asset_selection={assets!r})
       for t in {tags!r}]
with dg.DagsterInstance.get() as instance:
    runs = [execution.wait(instance, i, timeout_seconds=900) for i in ids]
print(json.dumps([r.run_id for r in runs]))
"""
    return json.loads(stack.python(code, timeout=1200))


def _lake_fingerprints(env: dict[str, str], partitions: list[str]) -> dict[str, str]:
    """Content fingerprint of each (stage, partition) file of the dataset in the lake that
    ``env`` names (local or S3): row order and file layout do not count, every value does."""
    code = f"""
import json, polars as pl
from upath import UPath
from ml_assets import settings
from ml_assets.features.training_set import fingerprint
root = UPath(settings.current().lake_path) / {DATASET!r}
out = {{}}
for stage in {list(STAGES)!r}:
    for p in {partitions!r}:
        path = root / stage / f"{{p}}.parquet"
        with path.open("rb") as fh:
            frame = pl.read_parquet(fh)
        out[f"{{stage}}/{{p}}"] = fingerprint(frame, [frame.columns[0]])
print(json.dumps(out))
"""
    return json.loads(_python(code, env))


@pytest.fixture(scope="module")
def main_job(stack: Stack) -> str:
    """The README's main job on the profile, once for the module: its output."""
    return stack.cli("run", DATASET, timeout=1500)


def test_the_main_job_runs_end_to_end_on_the_profile_and_the_exported_bento_serves(
    stack: Stack, main_job: str, tmp_path: Path
) -> None:
    out = main_job
    assert f"{DATASET}_pipeline:" in out and "FAILED" not in out, out
    assert f"{DATASET}_train: 1 run, succeeded" in out, out
    assert f"{DATASET}_score:" in out and "champion: v1" in out, out
    exported = next(
        line.split()[2].rstrip(";") for line in out.splitlines() if "exported to" in line
    )
    assert exported.startswith(f"s3://{stack.bucket}/bentos/{DATASET}/"), out

    # Everything landed where the profile says: the lake and MLflow's artifacts in the object
    # store (through the tracking server: the clients never saw S3 for MLflow), the registry in
    # PostgreSQL.
    listing = json.loads(
        stack.python(
            "import json, s3fs, ml_assets.settings; fs = s3fs.S3FileSystem(); "
            f"print(json.dumps([p.split('/', 2)[1] for p in fs.find({stack.bucket!r})]))"
        )
    )
    assert {"lake", "mlflow", "bentos"} <= set(listing)  # (the prediction log: once served)
    engine = sa.create_engine(f"{PG}/{stack.databases[1]}")
    with engine.connect() as conn:
        versions = conn.exec_driver_sql(
            "select count(*) from model_versions where name = %s", (DATASET,)
        ).scalar()
    engine.dispose()
    assert versions == 1

    # A serving host: a BentoML home of its own, the Bento imported from the object store,
    # two HTTP workers.
    bentoml_home = tmp_path / "serving_host"
    tag = stack.python(
        "from pathlib import Path; from ml_assets.serve.bento import import_bento; "
        f"print(import_bento({exported!r}, Path({str(bentoml_home)!r})))"
    )
    assert (bentoml_home / "bentos").exists()
    env = {**stack.env, **serve_env(stack.home, bentoml_home)}
    env.update({k: v for k, v in stack.env.items() if k.startswith(("ML_ASSETS_", "AWS_"))})
    env["BENTOML_HOME"] = str(bentoml_home)
    server = start_server(tag, env, tmp_path / "serve.log", workers=2)
    try:
        server.wait_ready(timeout=180)
        import httpx

        from ml_assets.contracts import load_contracts
        from ml_assets.ingest.demo import demo_frames

        contract = load_contracts()[DATASET]
        rows = demo_frames(contract)["entity"].head(3)
        records = [
            {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in r.items()}
            for r in rows.to_dicts()
        ]
        # Entity records: the features are computed by the Bento's spec, its aggregates read
        # from the profile's online store on PostgreSQL.
        resp = httpx.post(
            f"{server.url}/v1/predict_by_keys",
            json={"records": records},
            timeout=30,
            trust_env=False,
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["predictions"]) == 3, body
        assert body["model_version"] == "1", body

        # The prediction log is in the object store: another process (monitoring's host)
        # reads the three rows there by their events' time.
        event_time = contract.entity.event_time
        first, last = rows[event_time].min(), rows[event_time].max() + dt.timedelta(seconds=1)
        read = (
            "from datetime import datetime as d; from ml_assets import settings; "
            "from ml_assets.serve.prediction_log import read_served; "
            f"r = read_served({DATASET!r}, d.fromisoformat({first.isoformat()!r}), "
            f"d.fromisoformat({last.isoformat()!r}), {event_time!r}); "
            "print(settings.current().prediction_log_path, r.rows.height, len(r.unreadable))"
        )
        wait_until(
            lambda: stack.python(read) == f"s3://{stack.bucket}/prediction_log 3 0",
            120,
            interval=1,
            what="the served rows in the object store",
        )
    finally:
        server.stop()


def test_a_backfill_fans_out_over_both_workers_with_the_embedded_results(
    stack: Stack, tmp_path: Path
) -> None:
    # The first partitions: their features' trailing windows reach back before the first
    # partition in both lakes alike, whatever else either lake holds.
    partitions = [f"2017-01-{day}" for day in range(24, 30)]
    # A multi-run backfill: one run per partition, submitted at once; the queue lets two of
    # the dataset's runs go at a time and each step is a Celery task.
    ids = _submit(stack, f"{DATASET}_pipeline", [{"dagster/partition": p} for p in partitions])
    facts = _run_facts(stack, ids)
    assert [f["status"] for f in facts] == ["SUCCESS"] * len(partitions), facts
    workers = {w for f in facts for w in f["workers"].values()}
    queue = stack.env["ML_ASSETS_CELERY_QUEUE"]
    assert workers == {f"worker{i}-{queue}@{socket.gethostname()}" for i in (1, 2)}, workers
    for f in facts:  # every step of every run went through Celery
        assert f["steps"] and sorted(f["workers"]) == f["steps"], f

    # The embedded default on the same source rows (the profile's PostgreSQL source),
    # in-process, to a local lake: the same partitions, the same content.
    embedded_home = tmp_path / "embedded"
    embedded = {
        k: v
        for k, v in stack.env.items()
        if not k.startswith(("ML_ASSETS_", "MLFLOW_", "DAGSTER_"))
    }
    embedded.update(
        {
            "ML_ASSETS_HOME": str(embedded_home),
            "ML_ASSETS_SOURCE_URL": stack.env["ML_ASSETS_SOURCE_URL"],
        }
    )
    stack.cli(
        "run",
        DATASET,
        "--only",
        "pipeline",
        "--from",
        partitions[0],
        "--to",
        partitions[-1],
        env=embedded,
    )
    ours = _lake_fingerprints(stack.env, partitions)
    theirs = _lake_fingerprints(embedded, partitions)
    assert ours == theirs
    assert len(ours) == len(STAGES) * len(partitions)


def test_two_training_runs_requested_at_once_run_one_after_the_other(
    stack: Stack, main_job: str
) -> None:
    # The model alone (its training set is the main job's), few rounds and a gate that lets
    # the weaker model through: the runs' order is what is checked here (a gate that blocks
    # fails the run, as it should), and the limit is on the training job's runs, whatever
    # they select.
    quick = {"iterations": 30, "tolerance": 10.0, "slice_tolerance": 10.0}
    config = {"ops": {f"{DATASET}__model": {"config": quick}}}
    ids = _submit(
        stack, f"{DATASET}_train", [{}, {}], run_config=config, assets=[[DATASET, "model"]]
    )
    facts = _run_facts(stack, ids)
    assert [f["status"] for f in facts] == ["SUCCESS", "SUCCESS"], facts
    first, second = sorted(facts, key=lambda f: f["start"])
    # The instance's limit (ml_assets/stage=train: 1): the second started only after the
    # first had ended, although both were submitted together.
    assert second["start"] >= first["end"], facts


def test_a_piece_that_cannot_start_is_named_with_its_setting(tmp_path: Path) -> None:
    profile = production_profile(tmp_path, uuid.uuid4().hex[:8])
    env = profile.env
    closed = free_port()
    for setting, value, needle in (
        (
            "ML_ASSETS_CELERY_BROKER",
            f"pyamqp://guest:guest@127.0.0.1:{closed}//",
            "ML_ASSETS_CELERY_BROKER",
        ),
        (
            "DAGSTER_PG_URL",
            f"postgresql+psycopg2://postgres@127.0.0.1:{closed}/x",
            "DAGSTER_PG_URL",
        ),
        ("MLFLOW_TRACKING_URI", "http://10.1.2.3:5001", "MLFLOW_TRACKING_URI"),
    ):
        proc = _run([CLI, "services", "up"], {**env, setting: value}, 300)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        error = next(line for line in proc.stdout.splitlines() if line.startswith("error:"))
        assert needle in error, error
    subprocess.run([CLI, "services", "down"], env=env, cwd=REPO, timeout=120)
    profile.drop_databases()
    assert not list((tmp_path / "services").glob("*.pid"))
