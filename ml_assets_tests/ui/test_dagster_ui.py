"""The Dagster UI after the car-loan demo, as a person sees it: ``dagster-webserver`` on the
demo's home (the session's shared ``car_loan_demo``: its replay, sensor-launched retrain and
monitoring summary), in headless Chromium.

What a user checks after ``make demo``: the lineage from the served Bento through its prediction
log to monitoring; the retrain the sensor launched and the champion it promoted; a monitoring
partition's checks and NannyML plot; the drift over time; and the first thing they *do*, a
materialization of one monitoring partition from the launchpad, driven to its end in the UI.

The webserver reads the demo's Dagster instance (its run, event log and schedule storage) but
through an instance config of its own (:func:`ui_instance`): the demo's ``dagster.yaml`` names
no run coordinator, so Dagster's default, the queued coordinator, would leave a run launched
from the UI queued until a ``dagster-daemon`` dequeues it; and a daemon would also tick the two
sensors the code location starts as RUNNING (retrain, late labels), which would launch runs of
their own in the middle of the test. The UI's config launches directly (the default
coordinator), with no daemon, so the only run the test adds is the one it clicks.

``ML_ASSETS_UI_SCREENSHOTS=DIR`` writes the README's screenshots (lineage, drift over time) to
``DIR`` (``scripts/ui_screenshots.sh`` sets it to ``docs/images``); otherwise they go to the
test's temporary folder and are only checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ml_assets.testing import free_port, wait_until
from ml_assets_tests.demo_home import Demo

pytestmark = pytest.mark.xdist_group("demo")

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SENSOR = "car_loan_retrain_sensor"
MONITORING = "car_loan/monitoring"
CHECKS = ("drift", "estimated_performance", "estimate_vs_realized", "data_quality")
UI_TIMEOUT = 60_000
"""ms for a page's data to arrive (GraphQL over a loaded 2-core machine)."""
RUN_TIMEOUT = 300_000
"""ms for the launched monitoring run: a run worker process loading the code location, then
NannyML over one week without plots (about 30-60 s on 2 loaded cores)."""


@dataclass(frozen=True)
class Webserver:
    url: str
    demo: Demo
    instance_dir: Path

    @cached_property
    def _instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.instance_dir))

    def instance(self) -> dg.DagsterInstance:
        """The instance the webserver serves (the demo's storage), opened in this process
        (once; every query reads the storage afresh)."""
        return self._instance


def ui_instance(demo: Demo, folder: Path) -> Path:
    """A ``DAGSTER_HOME`` for the webserver: the demo's ``dagster.yaml`` (telemetry off, run
    retries), storage and artifacts in the demo's instance, and the default run coordinator,
    which launches a run from the UI at once, without a daemon (see the module's doc)."""
    base = str(demo.dagster_home)
    config = yaml.safe_load((demo.dagster_home / "dagster.yaml").read_text()) or {}
    config.update(
        storage={"sqlite": {"base_dir": base}},
        local_artifact_storage={
            "module": "dagster._core.storage.root",
            "class": "LocalArtifactStorage",
            "config": {"base_dir": base},
        },
        compute_logs={
            "module": "dagster._core.storage.local_compute_log_manager",
            "class": "LocalComputeLogManager",
            "config": {"base_dir": str(demo.dagster_home / "storage")},
        },
        run_coordinator={
            "module": "dagster._core.run_coordinator",
            "class": "DefaultRunCoordinator",
        },
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def webserver(car_loan_demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """``dagster-webserver`` on a free loopback port, serving the code location on the demo's
    home (``ML_ASSETS_HOME``) and instance."""
    out = car_loan_demo.out
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = tmp_path_factory.mktemp("ui")
    instance_dir = ui_instance(car_loan_demo, folder / "dagster_home")
    env = car_loan_demo.env()
    env["DAGSTER_HOME"] = str(instance_dir)
    port = free_port()
    log_file = folder / "webserver.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-webserver"),
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log_file.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, 180, interval=0.5, what="the webserver's /server_info")
        yield Webserver(url, car_loan_demo, instance_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the README's screenshots go (``ML_ASSETS_UI_SCREENSHOTS``, else a temp folder)."""
    given = os.environ.get("ML_ASSETS_UI_SCREENSHOTS")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        return Path(given)
    return tmp_path_factory.mktemp("screenshots")


def _page(browser: Browser, url: str, width: int = 1600, height: int = 1000) -> Page:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(UI_TIMEOUT)
    # Dagster greets a first visit with a newsletter dialog; a returning user has dismissed it.
    page.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
    page.goto(url, wait_until="domcontentloaded")
    return page


def _sensor_run(server: Webserver) -> Any:
    runs = server.instance().get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR}))
    assert len(runs) == 1, [r.run_id for r in runs]
    return runs[0]


def _monitored(server: Webserver) -> list[str]:
    """The monitoring partitions the demo materialized, in time order."""
    keys = server.instance().get_materialized_partitions(dg.AssetKey.from_user_string(MONITORING))
    return sorted(keys)


def _materialization_record(server: Webserver, partition: str) -> Any:
    """The latest materialization of one monitoring partition (its event log record)."""
    [record] = (
        server.instance()
        .fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey.from_user_string(MONITORING), asset_partitions=[partition]
            ),
            limit=1,
        )
        .records
    )
    return record


def _materialization(server: Webserver, partition: str) -> dg.AssetMaterialization:
    return _materialization_record(server, partition).asset_materialization


def _check_results(server: Webserver, partition: str) -> dict[str, bool]:
    """Each monitoring check's outcome for ``partition``, from the instance: the evaluations of
    the run of the partition's latest materialization."""
    record = _materialization_record(server, partition)
    events = server.instance().all_logs(
        record.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    )
    return {
        e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
        for e in events
        if e.dagster_event.event_specific_data.partition in (partition, None)
    }


def _exact(page: Page, text: str) -> int:
    """How many elements show exactly ``text`` (a node of the graph, a cell)."""
    return page.get_by_text(text, exact=True).count()


# --- looking: what the demo left ----------------------------------------------------------


def test_lineage_runs_from_the_bento_through_the_prediction_log_to_monitoring(
    webserver: Webserver, browser: Browser, shots: Path
) -> None:
    url = webserver.url
    # the whole group, as a user first opens it: every stage of the platform
    page = _page(browser, f"{url}/locations/ml_assets/asset-groups/car_loan")
    page.get_by_text("prediction_log", exact=True).first.wait_for()
    for stage in ("raw", "validated", "quarantine"):
        for role in ("entity", "labels"):
            assert _exact(page, f"{stage}_{role}"), f"{stage}_{role}"
    for asset in ("features", "online_features", "training_set", "model", "champion"):
        assert _exact(page, asset), asset
    for asset in ("bento", "predictions", "reference", "monitoring", "monitoring_summary"):
        assert _exact(page, asset), asset
    assert "Join the Dagster community" not in page.inner_text("body")
    page.close()
    # the edges, from the prediction log's nearest neighbours: the served Bento writes it,
    # monitoring reads it, and nothing else touches it
    page = _page(
        browser, f"{url}/assets/car_loan/prediction_log?view=lineage&lineageScope=neighbors"
    )
    page.get_by_text("monitoring", exact=True).first.wait_for()
    expect(page.get_by_text("External Asset")).to_be_visible()
    for asset in ("bento", "monitoring"):
        assert _exact(page, asset), asset
    for asset in ("champion", "features", "predictions", "monitoring_summary"):
        assert not _exact(page, asset), f"{asset} is not a neighbour of the prediction log"
    page.close()
    page = _page(browser, f"{url}/assets/car_loan/monitoring?view=lineage&lineageScope=downstream")
    page.get_by_text("monitoring_summary", exact=True).first.wait_for()
    assert not _exact(page, "champion")  # the loop back to training is the sensor's, not an edge
    page.close()
    # the README's picture: from the champion down to the monitoring summary
    page = _page(
        browser,
        f"{url}/assets/car_loan/champion?view=lineage&lineageScope=downstream&lineageDepth=4",
        height=900,
    )
    page.get_by_text("monitoring_summary", exact=True).first.wait_for()
    for asset in ("bento", "prediction_log", "predictions", "reference", "monitoring"):
        assert _exact(page, asset), asset
    page.get_by_text("Hide navigation").click()
    expect(page.get_by_text("Latest event").first).to_be_visible()  # full nodes, not minimal
    expect(page.get_by_text("Loading...", exact=True)).to_have_count(0, timeout=UI_TIMEOUT)
    page.wait_for_timeout(1500)  # the graph re-centres once the navigation is hidden
    page.screenshot(path=str(shots / "lineage.png"))
    assert 20_000 < (shots / "lineage.png").stat().st_size < 300_000
    page.close()


def test_the_sensor_launched_retrain_promoted_v2(webserver: Webserver, browser: Browser) -> None:
    run = _sensor_run(webserver)
    short = run.run_id[:8]
    url = webserver.url
    # the Runs list, filtered as the UI's "Launched by" filter writes it
    page = _page(browser, f"{url}/runs?q%5B%5D=tag%3Adagster%2Fsensor_name%3D{SENSOR}")
    page.get_by_role("link", name=short).first.wait_for()
    # the feed is a virtualized table of divs (no ARIA rows): its rows by their CSS module
    rows = page.locator("[class*='RunsFeedRow_rowGrid']")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("car_loan_train")
    expect(rows.first).to_contain_text(SENSOR)
    expect(rows.first).to_contain_text("Success")
    expect(rows.first).to_contain_text("ml_assets/trigger: retrain_sensor")
    page.close()
    # the champion's latest materialization: v2, replacing v1, in that very run
    page = _page(browser, f"{url}/assets/car_loan/champion?view=events")
    page.get_by_text("Materialized in run").first.wait_for()
    event = page.locator("table").filter(has_text="previous_champion").first
    for key, value in (("champion_version", "2"), ("previous_champion", "1")):
        row = event.get_by_role("row").filter(has=page.get_by_text(key, exact=True))
        expect(row.get_by_role("cell").nth(1)).to_have_text(value)
    expect(page.get_by_text("Materialized in run").first).to_contain_text(short)
    page.get_by_role("link", name=short).first.click()
    page.wait_for_url(f"**/runs/{run.run_id}**")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("car_loan champion: v2 (was 1)").first).to_be_visible()
    page.close()
    # the Bento rebuilt by the same run, serving v2
    page = _page(browser, f"{url}/assets/car_loan/bento?view=events")
    page.get_by_text("Materialized in run").first.wait_for()
    expect(page.get_by_text("Materialized in run").first).to_contain_text(short)
    expect(page.get_by_text(re.compile(r"car_loan_service:v2-")).first).to_be_visible()
    page.close()


def test_the_model_links_to_mlflow_and_the_stages_show_their_checks(
    webserver: Webserver, browser: Browser
) -> None:
    """The latest model (v2, the sensor's retrain): its metrics against the baseline, its
    MLflow run, and the promotion gate's reason; the validated entity's data checks."""
    url = webserver.url
    page = _page(browser, f"{url}/assets/car_loan/model")
    # metadata and check results load after the page: wait for the values themselves
    page.get_by_text("http://127.0.0.1:5000/#/experiments/").first.wait_for()
    body = page.inner_text("body")
    assert "test_roc_auc" in body and "baseline_roc_auc" in body
    page.close()
    page = _page(browser, f"{url}/assets/car_loan/model?view=checks")
    page.get_by_text("promotion_gate", exact=True).first.wait_for()
    expect(page.get_by_text("roc_auc 0.").first).to_contain_text("vs champion")  # v2 vs v1
    page.close()
    page = _page(browser, f"{url}/assets/car_loan/validated_entity?view=checks")
    page.get_by_text("quarantine_rate", exact=True).first.wait_for()
    for check in ("schema_conformance", "primary_key_unique", "quarantine_rate", "null_rate"):
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    assert "Succeeded" in page.inner_text("body")
    page.close()


def test_a_monitoring_partition_shows_its_checks_and_plots(
    webserver: Webserver, browser: Browser
) -> None:
    """The replay's last week (the one whose plots it drew): its four checks with the same
    results as the instance holds, and NannyML's plots as images in its metadata."""
    last = _monitored(webserver)[-1]
    results = _check_results(webserver, last)
    assert set(results) == set(CHECKS), results
    url = webserver.url
    page = _page(browser, f"{url}/assets/car_loan/monitoring?view=partitions&partition={last}")
    plots = page.get_by_role("row").filter(has=page.get_by_text("plots", exact=True))
    plots.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    images = dialog.locator("img")
    images.first.wait_for()
    alts = [images.nth(i).get_attribute("alt") for i in range(images.count())]
    assert {"univariate_drift", "multivariate_drift", "estimated_performance"} <= set(alts), alts
    for i in range(images.count()):  # decoded PNGs, not broken links
        size = images.nth(i).evaluate(
            "i => i.complete ? [i.naturalWidth, i.naturalHeight] : [0, 0]"
        )
        assert size[0] > 200 and size[1] > 200, (alts[i], size)
    page.keyboard.press("Escape")
    page.close()
    for check in CHECKS:
        page = _page(browser, f"{url}/assets/car_loan/monitoring?view=checks&checkDetail={check}")
        page.get_by_text("Latest execution").first.wait_for()
        expect(page.get_by_text("This is a non-blocking asset check.")).to_be_visible()
        for other in CHECKS:  # the list of the asset's checks, beside the detail
            expect(page.get_by_text(other, exact=True).first).to_be_visible()
        page.get_by_role("tab", name="Execution history").click()
        row = page.get_by_role("row").filter(has_text=last).first
        want = "Passed" if results[check] else "Failed"
        expect(row.get_by_role("cell").first).to_have_text(want)
        page.close()


def test_the_monitoring_summary_shows_drift_over_time(
    webserver: Webserver, browser: Browser, shots: Path
) -> None:
    """The summary the demo materialized after the replay: every monitored week, both
    champions, and its figure (reconstruction error rising with the shift, v2 marked)."""
    weeks = _monitored(webserver)
    url = webserver.url
    # wide enough for the figure's 1400 px in the markdown dialog (at most 80% of the width)
    page = _page(browser, f"{url}/assets/car_loan/monitoring_summary", width=1800, height=1050)
    meta = page.get_by_role("row")
    meta.filter(has_text="partitions_monitored").first.wait_for()
    expect(meta.filter(has_text="partitions_monitored").first).to_contain_text(str(len(weeks)))
    expect(meta.filter(has_text="first_partition").first).to_contain_text(weeks[0])
    expect(meta.filter(has_text="last_partition").first).to_contain_text(weeks[-1])
    expect(meta.filter(has_text="champion_versions").first).to_contain_text("1, 2")
    summary = meta.filter(has=page.get_by_text("summary", exact=True))
    summary.get_by_text("[Show Markdown]").click()
    image = page.get_by_role("dialog").locator("img")
    image.wait_for()
    size = image.evaluate("i => i.complete ? [i.naturalWidth, i.naturalHeight] : [0, 0]")
    assert size[0] >= 1000 and size[1] >= 1000, size  # one panel per metric, stacked
    page.wait_for_timeout(500)  # the dialog's opening transition
    page.screenshot(path=str(shots / "drift_over_time.png"))
    assert 20_000 < (shots / "drift_over_time.png").stat().st_size < 300_000
    page.close()


# --- doing: the user's first materialization ----------------------------------------------


def test_materialize_one_monitoring_partition_from_the_launchpad(
    webserver: Webserver, browser: Browser
) -> None:
    """Open the launchpad on the monitoring asset, pick one week with predictions (which one:
    see below), turn the plots and the domain classifier off in its config (they are what a
    monitoring run spends its time on: kaleido renders a PNG per calculator, the classifier
    fits 5 LightGBM folds; the drift, performance and quality results and every check are
    computed all the same), launch, and watch the run succeed in the UI; then the instance
    agrees."""
    # A full monitoring run judges a week against the champion of *now* (monitor/assets.py,
    # _what_to_monitor): re-monitoring a week the replay monitored under v1 would rewrite its
    # results under v2 (measured: test_cli_output's replay test then fails). So the week is
    # one monitored under the current champion already, and not the last (whose plots the
    # other tests read): the replay's results stay as they were, but for the late labels.
    weeks = _monitored(webserver)
    partition = weeks[-2]
    instance = webserver.instance()
    champion = instance.get_latest_materialization_event(dg.AssetKey(["car_loan", "champion"]))
    version = champion.asset_materialization.metadata["champion_version"].value
    assert _materialization(webserver, partition).metadata["champion_version"].value == version
    from ml_assets import settings
    from ml_assets.dataset import load_datasets
    from ml_assets.storage import Lake

    conf = settings.from_env({"ML_ASSETS_HOME": str(webserver.demo.home)})
    keys = load_datasets()["car_loan"].keys
    assert Lake(base_path=conf.lake_path).exists(keys.predictions, partition)
    before = {r.run_id for r in instance.get_runs()}

    page = _page(browser, f"{webserver.url}/assets/car_loan/monitoring")
    materialize = page.get_by_role("button", name="Materialize…")
    materialize.wait_for()
    # the arrow beside "Materialize…" opens the menu with "Open launchpad"
    materialize.locator("xpath=ancestor::span[1]/following-sibling::span[1]//button").click()
    page.get_by_role("menuitem", name="Open launchpad").click()
    launchpad = page.get_by_role("dialog")
    launchpad.get_by_text("car_loan__monitoring:").first.wait_for()
    picker = launchpad.get_by_placeholder("Partition")
    picker.click()
    picker.fill(partition)
    page.get_by_role("menuitem", name=partition).click()
    expect(launchpad.get_by_text(f"partition: {partition}")).to_be_visible()
    editor = launchpad.locator(".CodeMirror").first
    editor.locator(".CodeMirror-line", has_text="plots: true").get_by_text("true").dblclick()
    page.keyboard.type("false")
    page.keyboard.press("End")
    page.keyboard.press("Enter")  # the editor keeps the indentation
    page.keyboard.type("domain_classifier: false")
    config = yaml.safe_load(editor.evaluate("e => e.CodeMirror.getValue()"))
    assert config["ops"]["car_loan__monitoring"]["config"]["plots"] is False
    assert config["ops"]["car_loan__monitoring"]["config"]["domain_classifier"] is False
    expect(launchpad.get_by_text("No errors")).to_be_visible()
    launchpad.get_by_role("button", name="Materialize").click()

    page.wait_for_url("**/runs/**")
    run_id = page.url.split("/runs/")[1].split("?")[0]
    assert run_id not in before
    expect(page.get_by_text(f"partition: {partition}").first).to_be_visible()
    # the run's status tag turns from Starting / Started to Success
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_TIMEOUT)
    expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()
    page.close()

    instance = webserver.instance()
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == partition
    assert run.run_config["ops"]["car_loan__monitoring"]["config"]["plots"] is False
    record = _materialization_record(webserver, partition)
    assert record.run_id == run_id
    meta = record.asset_materialization.metadata
    assert meta["champion_version"].value == version
    assert meta["rows"].value > 0
    assert meta["plots"].value == ""  # none drawn, as configured
    assert set(_check_results(webserver, partition)) == set(CHECKS)
