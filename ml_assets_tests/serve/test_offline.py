"""Offline by default, carried by the Bento itself: ``bentoml serve`` of a built Bento, started
by a user who set none of the telemetry opt-outs, makes no connection and no DNS lookup
beyond loopback, from its start through a prediction to its graceful stop (issue 11, "Offline
and exposure by default"). Every ``connect`` call of the whole process tree is recorded by
``strace -f``; a lookup of BentoML's tracking host would be a connect to a name server."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import psutil
import pytest

from ml_assets.settings import TELEMETRY_OFF
from ml_assets_tests.connects import outbound, strace_prefix, traced_processes
from ml_assets_tests.serve import support

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.serve]


def test_a_served_bento_makes_no_outbound_connection_without_the_users_opt_outs(
    built, champion, online_url: str, tmp_path: Path
) -> None:
    """Before, the opt-out set when ml_assets is imported came too late for ``bentoml serve``
    (it reads its switch once, cached, before importing the service): it looked up
    t.bentoml.com at start and at shutdown unless the user's shell had the variable."""
    env = support.serve_env(
        tmp_path / "home",
        support.server_home(built.bentoml_home, tmp_path / "bentoml"),
        ML_ASSETS_ONLINE_URL=online_url,
    )
    for key in TELEMETRY_OFF:  # as a user who never heard of them
        env.pop(key, None)
    trace = tmp_path / "connect.trace"
    prefix = strace_prefix(trace)
    assert prefix, "strace is missing: scripts/system-deps.sh installs it"
    server = support.start_server(
        built.bento_tag,
        env,
        tmp_path / "server.log",
        wrapper=prefix,
    )
    try:
        server.wait_ready(180)
        records = support.feature_records(champion.holdout.head(2), champion.problem.features)
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            resp = http.post("/v1/predict", json={"records": records})
            assert resp.status_code == 200, resp.text
        # a graceful stop of bentoml itself (strace's child), where it reported the command
        [bentoml] = psutil.Process(server.proc.pid).children()
        bentoml.send_signal(signal.SIGTERM)
        assert server.proc.wait(90) is not None
    finally:
        server.stop(signal.SIGKILL)
    recorded = trace.read_text()
    assert traced_processes(recorded) >= 2  # the whole tree: the supervisor and its worker
    assert outbound(recorded) == [], server.output()[-2000:]
