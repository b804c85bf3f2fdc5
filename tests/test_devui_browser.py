"""The dev dashboard in a real headless Chromium (Debian's chromium + chromium-driver, via Selenium).

``sentient dev`` runs as a subprocess against the fake upstreams; the browser loads
``/_dev/``, sends a prompt from the console, finds the request in the live view with its
events, opens it, and sees a reload when the agent file is touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sentient_operator.cli import scaffold
from tests.support import browser
from tests.support.dev_server import RunDev, dev_servers, edit

pytestmark = pytest.mark.slow


@pytest.fixture
def run_dev(tmp_path: Path) -> Iterator[RunDev]:
    yield from dev_servers(tmp_path)


@pytest.fixture
def driver() -> Iterator[WebDriver]:
    why = browser.missing()
    if why is not None:
        pytest.fail(why)  # not a skip: CI installs the browser, a missing one is a broken setup
    with browser.chromium() as session:
        yield session


def _text(driver: WebDriver, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def test_console_prompt_shows_in_the_live_view_and_a_reload_shows_up(
    run_dev: RunDev, driver: WebDriver, tmp_path: Path
) -> None:
    docs = scaffold.agent_manifests("helper", "openai", "vault")
    (tmp_path / "agent.yaml").write_text(scaffold.dump_documents(docs))
    dev = run_dev(["--fake", "--no-inspect"], tmp_path)
    dev.wait_for(r"watching for changes")
    wait = WebDriverWait(driver, 30, poll_frequency=0.1)

    driver.get(f"{dev.url}/_dev/")
    assert driver.title == "sentient dev"
    # Connected to the live stream, and the snapshot drawn: agent, config, first generation.
    wait.until(lambda d: "on" in (d.find_element(By.ID, "connection").get_attribute("class") or ""))
    wait.until(lambda d: _text(d, "#agent") == "default/helper")
    assert '"name": "helper"' in _text(driver, "#config")
    wait.until(lambda d: "generation 1 serving" in _text(d, "#reloads"))

    driver.find_element(By.ID, "console-prompt").send_keys("hello from the browser")
    driver.find_element(By.ID, "console-send").click()
    # The console shows the events as they arrive, then the end.
    wait.until(lambda d: "done in" in _text(d, "#console-output"))
    console = _text(driver, "#console-output")
    assert "← 200" in console and "Echo: hello from the browser" in console

    # The live view has the request, with the provider the runtime chose and its events.
    row_selector = "#requests tbody tr"
    wait.until(lambda d: "hello from the browser" in _text(d, row_selector))
    wait.until(lambda d: "default/helper-openai" in _text(d, row_selector))
    row = driver.find_element(By.CSS_SELECTOR, row_selector)
    assert "200" in row.text
    row.click()
    wait.until(lambda d: "event stream" in _text(d, "#detail-body"))
    wait.until(lambda d: "attempt" in _text(d, "#detail-body .runtime"))
    detail = _text(driver, "#detail-body")
    assert "Echo: hello from the browser" in detail and "request.end" in detail
    request_id = row.get_attribute("data-id")

    # Replay from the detail view: a new request through the console, a second row.
    driver.find_element(By.ID, "detail-replay").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, row_selector)) == 2)
    wait.until(lambda d: "done in" in _text(d, "#console-output"))
    assert driver.find_elements(By.CSS_SELECTOR, row_selector)[1].get_attribute("data-id") == request_id

    # Touching the agent file reloads it: the reload is pushed to the page.
    agent = tmp_path / "agent.yaml"
    edit(agent, agent.read_text() + "\n")
    wait.until(lambda d: "generation 2 serving" in _text(d, "#reloads"))
    wait.until(lambda d: _text(d, "#generation") == "generation 2")
    # The charts were drawn from live metric points.
    wait.until(
        lambda d: d.execute_script("return document.getElementById('chart-rps').toDataURL().length") > 1000
    )

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
