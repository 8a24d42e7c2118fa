"""Session fixtures of the serving tests: one real champion, online store, Bento and server.

Tests using them are in the xdist group ``serve``, so one worker builds everything once.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from ml_assets_tests.serve import support

MAX_BODY_BYTES = 256 * 1024
MAX_RECORDS = 1000


def network_isolation_available() -> bool:
    """Whether ``unshare -rn`` works here (user namespaces); the Bento build then runs in an
    empty network namespace. Elsewhere it still runs with every proxy pointed at a closed port
    and package indexes off (see ``ml_assets.serve.bento.offline_env``)."""
    import subprocess

    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


@dataclass
class Built:
    """The bento asset's materialization."""

    result: dg.ExecuteInProcessResult
    metadata: dict
    bento_tag: str
    model_tag: str
    bentoml_home: Path
    isolated: bool


@pytest.fixture(scope="session")
def serve_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve_home")


@pytest.fixture(scope="session")
def champion(serve_home: Path) -> support.Champion:
    return support.train_champion(serve_home)


@pytest.fixture(scope="session")
def online_url(serve_home: Path) -> str:
    url = f"sqlite:///{serve_home / 'online.sqlite'}"
    support.seed_online_store(url)
    return url


@pytest.fixture(scope="session")
def bento_builder_resource(serve_home: Path):
    from ml_assets.serve.assets import BentoBuilder

    return BentoBuilder(
        home=str(serve_home / "bentoml"), isolate_network=network_isolation_available()
    )


@pytest.fixture(scope="session")
def built(champion: support.Champion, bento_builder_resource, serve_home: Path) -> Built:
    """The ``bento`` asset materialized from the champion (the asset code, for real)."""
    from ml_assets.dataset import Dataset
    from ml_assets.serve.assets import serving_definitions

    contract, _ = support.car_loan()
    defs = serving_definitions(Dataset.build(contract))
    result = dg.materialize(
        list(defs.assets or []),
        resources={"mlflow": champion.tracking, "bento_builder": bento_builder_resource},
    )
    assert result.success
    node = dg.AssetKey([contract.name, "bento"]).to_python_identifier()
    mat = result.asset_materializations_for_node(node)[0]
    meta = {k: v.value for k, v in mat.metadata.items()}
    return Built(
        result=result,
        metadata=meta,
        bento_tag=meta["bento_tag"],
        model_tag=meta["bentoml_model_tag"],
        bentoml_home=Path(meta["bentoml_home"]),
        isolated=bento_builder_resource.isolate_network,
    )


@pytest.fixture(scope="session")
def server(
    built: Built, online_url: str, serve_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.ServerProcess]:
    """The BUILT Bento served by ``bentoml serve <tag>`` with 2 workers (shared gRPC port)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = support.serve_env(
        serve_home,
        support.server_home(built.bentoml_home, log.parent / "bentoml"),
        ML_ASSETS_ONLINE_URL=online_url,
        ML_ASSETS_SERVE_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        ML_ASSETS_SERVE_MAX_RECORDS=str(MAX_RECORDS),
    )
    proc = support.start_server(built.bento_tag, env, log, cwd=serve_home, workers=2)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
