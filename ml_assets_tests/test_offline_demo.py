"""The whole demo offline as a user runs it (none of the telemetry opt-outs in the shell):
the pipeline, training, the Bento build, a real ``bentoml serve`` answering the replay over
HTTP, NannyML's monitoring and the sensor-launched retrain make no connection beyond loopback
and no DNS lookup, in any process of the tree (issue 11, "Offline and exposure by default")."""

from __future__ import annotations

import pytest

from ml_assets_tests.connects import outbound, traced_processes
from ml_assets_tests.demo_home import Demo

pytestmark = [pytest.mark.slow, pytest.mark.serve, pytest.mark.xdist_group("demo")]


def test_the_demo_makes_no_outbound_connection(car_loan_demo: Demo) -> None:
    assert car_loan_demo.out.returncode == 0, car_loan_demo.out.stdout[-3000:]
    assert car_loan_demo.trace is not None, "strace is missing: scripts/system-deps.sh installs it"
    recorded = car_loan_demo.trace.read_text()
    # the demo's own process, the webserver-free Dagster runs' children and bentoml serve's
    assert traced_processes(recorded) >= 3, recorded[:2000]
    assert outbound(recorded) == []
