"""The Dagster UI as a data engineer sees it: the asset graph, an asset's partitions and its checks render
with our descriptions and no error banner (a real dagster-webserver, a real headless Chromium)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ERROR_TEXTS = ("Something went wrong", "Unexpected GraphQL error", "Error loading", "PythonError")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("ui")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITONFHIR_", "DAGSTER_"))}
    env |= {"FITONFHIR_HOME": str(home), "DAGSTER_HOME": str(home)}
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml"]
    server = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/server_info", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None, "dagster-webserver exited during start-up"
            time.sleep(0.5)
        else:
            raise AssertionError("dagster-webserver did not answer within 120 s")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(webserver: str) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser.new_page()
        browser.close()


def _body_with(page: Page, texts: tuple[str, ...], timeout: float = 60) -> str:
    """The page text once every one of ``texts`` is on it (the UI fills its lists in after the first paint)."""
    deadline = time.monotonic() + timeout
    while True:
        body = page.inner_text("body")
        missing = [t for t in texts if t not in body]
        if not missing:
            return body
        assert time.monotonic() < deadline, f"{missing} never appeared on {page.url}"
        page.wait_for_timeout(500)


def _no_error_banner(page: Page) -> None:
    body = page.inner_text("body")
    for text in ERROR_TEXTS:
        assert text not in body, f"{text!r} on {page.url}"


def test_the_asset_graph_shows_the_four_assets(page: Page, webserver: str):
    page.goto(webserver + "/asset-groups/fit_on_fhir")
    for name in ("fit_datasets", "device_messages", "fhir_observations", "medtech_templates"):
        page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
    _no_error_banner(page)


def test_an_asset_page_shows_its_description_definition_metadata_and_partitions(page: Page, webserver: str):
    page.goto(webserver + "/assets/fhir_observations")
    page.get_by_text("Observations built with MedTech's rules", exact=False).first.wait_for(timeout=60_000)
    page.get_by_text("fhir_base_url", exact=True).first.wait_for(timeout=60_000)
    _no_error_banner(page)
    page.goto(webserver + "/assets/fhir_observations?view=partitions")
    page.get_by_text("Missing (", exact=False).first.wait_for(timeout=60_000)
    page.get_by_text("Partitions Selected", exact=False).first.wait_for(timeout=60_000)
    _no_error_banner(page)


def test_the_checks_tab_lists_every_check_with_its_description(page: Page, webserver: str):
    page.goto(webserver + "/assets/fhir_observations?view=checks")
    page.get_by_text("Reconciliation across the three steps", exact=False).first.wait_for(timeout=60_000)
    names = ("no_dead_letters", "every_point_observed_or_dead_lettered", "written_sample_validates_r4b")
    body = _body_with(page, names)
    assert "No description provided" not in body
    _no_error_banner(page)
