"""The Dagster UI, as a person sees it: the webserver serving our code location, in Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from ml_assets.testing import wait_until

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    """`dagster-webserver` on a free loopback port, with one dataset's pipeline already run."""
    home = tmp_path_factory.mktemp("ui")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ML_ASSETS_"))},
        "ML_ASSETS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
    }
    bin_dir = Path(sys.executable).parent
    demo = subprocess.run(
        [str(bin_dir / "ml-assets"), "demo", "car_price"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    port = _free_port()
    log = (home / "webserver.log").open("w")
    proc = subprocess.Popen(
        [
            str(bin_dir / "dagster-webserver"),
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
        assert proc.poll() is None, (home / "webserver.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_until(ready, 120, interval=0.5, what="the webserver's /server_info")
    yield url, home
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _page(browser, url: str):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    # Dagster greets a first visit with a newsletter dialog; a returning user has dismissed it.
    page.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
    page.goto(url, wait_until="domcontentloaded")
    return page


def test_asset_graph_shows_the_lineage(webserver, browser, tmp_path):
    url, _ = webserver
    page = _page(browser, f"{url}/locations/ml_assets/asset-groups/car_price")
    page.get_by_text("validated_entity").first.wait_for(timeout=60_000)
    body = page.inner_text("body")
    for stage in ("raw", "validated", "quarantine"):
        for role in ("entity", "labels"):
            assert f"{stage}_{role}" in body
    for asset in (
        "features",
        "training_set",
        "online_features",
        "model",
        "champion",
        "predictions",
        "bento",
    ):
        assert asset in body
    assert "Join the Dagster community" not in body
    page.screenshot(path=str(tmp_path / "graph.png"))
    assert (tmp_path / "graph.png").stat().st_size > 10_000


def test_model_page_links_to_mlflow_and_shows_the_gate(webserver, browser):
    url, _ = webserver
    page = _page(browser, f"{url}/assets/car_price/model")
    # Metadata and check results load after the page: wait for the values themselves.
    page.get_by_text("http://127.0.0.1:5000/#/experiments/").first.wait_for(timeout=60_000)
    body = page.inner_text("body")
    assert "test_rmse" in body and "baseline_rmse" in body
    page = _page(browser, f"{url}/assets/car_price/model?view=checks")
    page.get_by_text("beats the naive baseline").first.wait_for(timeout=60_000)
    assert "promotion_gate" in page.inner_text("body")


def test_asset_page_shows_materialization_and_checks(webserver, browser):
    url, _ = webserver
    page = _page(browser, f"{url}/assets/car_price/validated_entity?view=checks")
    page.get_by_text("quarantine_rate").first.wait_for(timeout=60_000)
    body = page.inner_text("body")
    for check in ("schema_conformance", "primary_key_unique", "quarantine_rate", "null_rate"):
        assert check in body
    assert "Succeeded" in body
