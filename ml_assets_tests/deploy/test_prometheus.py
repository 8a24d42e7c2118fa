"""``deploy/prometheus/``: the scrape config and rules pass ``promtool``'s checks and its rule
unit tests (``alerts_test.yml``), and every series the rules read is one a real served model
exports on ``/metrics``, with the labels the rules group it by.

promtool comes from Debian's prometheus package (``scripts/system-deps.sh``, run by
``make test``, installs it); without it these tests fail, they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import grpc
import httpx
import pytest
import yaml

from ml_assets.serve import predictor_pb2 as pb
from ml_assets.serve import predictor_pb2_grpc as pb_grpc
from ml_assets_tests.serve import support

PROMETHEUS = support.REPO / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "alerts.yml"
RULES_TEST = PROMETHEUS / "alerts_test.yml"

# A series name in an expression, not part of a recording rule's `level:metric:ops` name.
METRIC = re.compile(r"(?<![\w:])ml_assets_\w+(?![\w:])")
GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![\w:])(ml_assets_\w+)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's prometheus package; "
            "`bash scripts/system-deps.sh` (run by `make test`) installs it",
            pytrace=False,
        )
    done = subprocess.run([exe, *args], capture_output=True, text=True, cwd=PROMETHEUS, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def test_config_is_valid_and_scrapes_the_service() -> None:
    out = promtool("check", "config", str(CONFIG))
    assert "is valid prometheus config file" in out, out
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == [RULES.name]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "ml_assets_serving"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:3000"]}]


def test_rules_are_valid() -> None:
    out = promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(rules())} rules found" in out, out


def test_every_alert_waits_has_a_severity_and_names_what_it_is_about() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(set(names)) == len(names) >= 5
    for alert in alerts():
        name, expr = alert["alert"], alert["expr"]
        assert alert.get("for"), name
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        annotations = alert["annotations"]
        assert set(annotations) >= {"summary", "description"}, name
        # the labels the alert's series carry name the dataset (and endpoint) in both texts
        about = ["$labels.instance"] if "up{" in expr else ["$labels.dataset"]
        if "dataset_endpoint:" in expr:
            about.append("$labels.endpoint")
        for key in ("summary", "description"):
            for label in about:
                assert label in annotations[key], (name, key, label)


@pytest.mark.slow
def test_alert_unit_tests_pass_and_cover_every_alert() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == [RULES.name]
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    for name in (a["alert"] for a in alerts()):
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no case where it is quiet"
    out = promtool("test", "rules", str(RULES_TEST))
    assert "SUCCESS" in out, out


def scrape_series(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets of its samples, from the text exposition format."""
    series: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(LABEL.findall(match.group(2) or ""))
            series.setdefault(match.group(1), []).append(labels)
    return series


def grouping_labels() -> dict[str, set[str]]:
    """Series name -> labels the rules group, join or select it by (the ``by``/``on`` lists
    and selector matchers of the expressions that read it directly)."""
    wanted: dict[str, set[str]] = {}
    for rule in rules():
        expr = STRING.sub('""', rule["expr"])  # no names inside label values
        grouped = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
        for name in METRIC.findall(expr):
            wanted.setdefault(name, set()).update(grouped - {""})
        for name, matchers in SELECTOR.findall(expr):
            wanted[name].update(MATCHER.findall(matchers))
    return wanted


@pytest.mark.serve
@pytest.mark.xdist_group("serve")
def test_rules_read_series_the_served_model_exports(
    server: support.ServerProcess, champion: support.Champion
) -> None:
    wanted = grouping_labels()
    assert {
        "ml_assets_request_duration_seconds_bucket",
        "ml_assets_requests_total",
        "ml_assets_prediction_score_sum",
        "ml_assets_prediction_score_count",
        "ml_assets_predicted_label_total",
    } <= set(wanted)
    records = support.feature_records(champion.holdout.head(5), champion.problem.features)
    with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
        for _ in range(2):
            assert http.post("/v1/predict", json={"records": records}).status_code == 200
        assert http.post("/v1/predict", json={"records": [{"x": 1}]}).status_code == 422
        with grpc.insecure_channel(server.grpc_target) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = pb_grpc.PredictorStub(channel)
            stub.Predict(pb.PredictRequest(records=support.proto_records(records)))
        resp = http.get("/metrics")
    assert resp.status_code == 200
    series = scrape_series(resp.text)
    missing = sorted(set(wanted) - set(series))
    assert not missing, f"the rules read series /metrics does not have: {missing}"
    for name, labels in wanted.items():
        for sample in series[name]:
            assert labels <= set(sample), (name, sorted(labels - set(sample)), sample)
    # the status values the error rule matches on: HTTP codes and gRPC code names
    statuses = {s["status"] for s in series["ml_assets_requests_total"]}
    assert {"200", "422", "OK"} <= statuses, statuses
    assert all(re.fullmatch(r"\d{3}|[A-Z_]+", s) for s in statuses), statuses
