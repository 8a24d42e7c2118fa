"""Alert sinks against a real local HTTP receiver: payload, dedup, retries, never raising."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ml_assets import settings
from ml_assets.monitor.alerts import LogSink, WebhookSink, default_sinks, send_alerts
from ml_assets.monitor.incidents import find_incidents
from ml_assets_tests.monitor.alert_tables import ESTIMATED, results

T, F = True, False
REPORT = "http://dagster.local/assets/car_loan/monitoring"


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST body; answers ``statuses`` in turn,
    then 200."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/secret"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger("test_alerts")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def incidents(alerts: list[bool]):
    return find_incidents(results({ESTIMATED: alerts}))


def webhook(url: str, waits: list[float] | None = None, attempts: int = 3) -> WebhookSink:
    record = waits if waits is not None else []
    return WebhookSink(url, attempts=attempts, timeout=2.0, backoff=0.01, sleep=record.append)


def test_the_webhook_gets_every_fact_of_the_alert(receiver, log, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="test_alerts")
    outcome = send_alerts(
        incidents([F, T, T]),
        log,
        report_url=REPORT,
        sinks=[LogSink(), webhook(receiver.url)],
        state_path=tmp_path / "sent.json",
    )
    incident_id = "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-08"
    assert outcome.sent == {incident_id: ["log", "webhook"]}
    [body] = receiver.bodies
    text = body["text"]
    for fact in ("car_loan", "2018-01-15", "roc_auc", "0.6", "0.7", "v3", REPORT, incident_id):
        assert fact in text, fact
    blocks = json.dumps(body["blocks"])
    for fact in ("car_loan", "2018-01-15", "roc_auc", "0.6", "0.7", "v3", REPORT):
        assert fact in blocks, fact
    # the Dagster log always has it too
    assert any("monitoring alert" in r.message and incident_id in r.message for r in caplog.records)


def test_the_same_incident_is_sent_once_even_as_it_goes_on(receiver, log, tmp_path):
    state = tmp_path / "monitoring" / "alerts_sent.json"
    sinks = [LogSink(), webhook(receiver.url)]
    send_alerts(incidents([F, T, T]), log, sinks=sinks, state_path=state)
    again = send_alerts(incidents([F, T, T]), log, sinks=sinks, state_path=state)
    longer = send_alerts(incidents([F, T, T, T]), log, sinks=sinks, state_path=state)
    assert len(receiver.bodies) == 1
    assert again.sent == {} and longer.sent == {}
    assert longer.already_sent == ["car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-08"]
    saved = json.loads(state.read_text())
    assert set(saved["incidents"]) == {"car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-08"}
    assert not [p for p in state.parent.iterdir() if p.name != state.name]  # no temp file left


def test_a_new_incident_after_recovery_is_sent(receiver, log, tmp_path):
    state = tmp_path / "sent.json"
    sinks = [webhook(receiver.url)]
    send_alerts(incidents([T, T]), log, sinks=sinks, state_path=state)
    send_alerts(incidents([T, T, F, T]), log, sinks=sinks, state_path=state)
    assert [b["text"].split("[incident ")[1] for b in receiver.bodies] == [
        "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-01]",
        "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-22]",
    ]


def test_receiver_down_retries_a_bounded_number_of_times_then_logs(log, tmp_path, caplog):
    waits: list[float] = []
    state = tmp_path / "sent.json"
    outcome = send_alerts(
        incidents([T]),
        log,
        sinks=[LogSink(), webhook(closed_port_url(), waits, attempts=3)],
        state_path=state,
    )  # no exception
    assert waits == [0.01, 0.02]  # three attempts, exponential backoff between them
    incident_id = "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-01"
    assert outcome.failed == {incident_id: ["webhook"]}
    assert outcome.sent == {incident_id: ["log"]}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "not sent after 3 attempts" in errors[0].getMessage()
    assert "secret" not in errors[0].getMessage()
    # not marked sent to the webhook: the next call tries it again
    saved = json.loads(state.read_text())["incidents"][incident_id]
    assert set(saved) == {"log"}


def test_a_500_is_retried_then_delivered(receiver, log, tmp_path):
    receiver.statuses = [500, 503]
    waits: list[float] = []
    outcome = send_alerts(
        incidents([T]),
        log,
        sinks=[webhook(receiver.url, waits)],
        state_path=tmp_path / "sent.json",
    )
    assert len(receiver.bodies) == 3
    assert waits == [0.01, 0.02]
    assert outcome.sent == {"car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-01": ["webhook"]}


def test_a_webhook_failing_every_time_is_retried_then_tried_again_next_call(
    receiver, log, tmp_path
):
    receiver.statuses = [500, 500, 500]
    state = tmp_path / "sent.json"
    first = send_alerts(incidents([T]), log, sinks=[webhook(receiver.url)], state_path=state)
    assert len(receiver.bodies) == 3 and first.failed
    second = send_alerts(incidents([T]), log, sinks=[webhook(receiver.url)], state_path=state)
    assert len(receiver.bodies) == 4 and second.sent


def test_a_client_error_is_not_retried(receiver, log, tmp_path):
    receiver.statuses = [404]
    outcome = send_alerts(
        incidents([T]), log, sinks=[webhook(receiver.url)], state_path=tmp_path / "s.json"
    )
    assert len(receiver.bodies) == 1 and outcome.failed


def test_nothing_raises_even_when_the_state_cannot_be_written(receiver, log, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    outcome = send_alerts(
        incidents([T]), log, sinks=[webhook(receiver.url)], state_path=blocker / "sent.json"
    )
    assert len(receiver.bodies) == 1 and outcome.sent


def test_a_non_http_webhook_is_refused(log, tmp_path):
    target = tmp_path / "leak.txt"
    outcome = send_alerts(
        incidents([T]), log, sinks=[webhook(f"file://{target}")], state_path=tmp_path / "s.json"
    )
    assert outcome.failed and not target.exists()


def test_the_webhook_comes_from_the_settings(monkeypatch, tmp_path, receiver, log):
    assert [s.name for s in default_sinks(settings.from_env({}))] == ["log"]
    monkeypatch.setenv("ML_ASSETS_HOME", str(tmp_path))
    monkeypatch.setenv("ML_ASSETS_ALERT_WEBHOOK", receiver.url)
    monkeypatch.setenv("ML_ASSETS_ALERT_ATTEMPTS", "5")
    [_, hook] = default_sinks()
    assert isinstance(hook, WebhookSink) and hook.attempts == 5
    send_alerts(incidents([T]), log, report_url={"car_loan": REPORT})
    assert len(receiver.bodies) == 1 and REPORT in receiver.bodies[0]["text"]
    assert Path(tmp_path / "monitoring" / "alerts_sent.json").exists()
