"""Take docs/images/dev-dashboard.png from the real dashboard in headless Chromium.

Starts ``sentient dev`` on the agent.yaml of ``sentient init`` against the fake upstreams,
sends a few requests (one from the page's own console), touches the agent file once (a
reload), opens one request in full, and saves a screenshot of the page.

Run: ``PYTHONPATH=operator:. python scripts/dev_dashboard_screenshot.py [--out FILE]``
(needs chromium and chromium-driver, which ``scripts/setup.sh`` installs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from sentient_operator.cli import scaffold  # noqa: E402
from tests.support import browser  # noqa: E402
from tests.support.dev_server import Dev, edit  # noqa: E402

PROMPTS = ["What is a circuit breaker?", "Summarise the failover chain", "Hello!"]
AFTER_RELOAD = ["Tell me a joke", "Which provider answered?"]


def main() -> None:
    """Start dev, drive the page, write the screenshot."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "dev-dashboard.png")
    args = parser.parse_args()
    why = browser.missing()
    if why is not None:
        sys.exit(why)
    with tempfile.TemporaryDirectory(prefix="sentient-shot-") as tmp:
        root = Path(tmp)
        docs = scaffold.agent_manifests("helper", "openai", "vault")
        agent = root / "agent.yaml"
        agent.write_text(scaffold.dump_documents(docs))
        dev = Dev(["--fake", "--no-inspect"], root, root / "dev.log")
        try:
            dev.wait_for(r"watching for changes")
            with browser.chromium(width=1280, height=1150) as driver:
                wait = WebDriverWait(driver, 30, poll_frequency=0.1)
                driver.get(f"{dev.url}/_dev/")
                wait.until(lambda d: "generation 1" in d.find_element(By.ID, "reloads").text)
                for prompt in PROMPTS[1:]:
                    httpx.post(f"{dev.url}/assist", json={"query": {"id": "q", "prompt": prompt}}, timeout=10)
                    time.sleep(0.7)
                edit(agent, agent.read_text() + "\n")
                wait.until(lambda d: "generation 2" in d.find_element(By.ID, "reloads").text)
                for prompt in AFTER_RELOAD:
                    httpx.post(f"{dev.url}/assist", json={"query": {"id": "q", "prompt": prompt}}, timeout=10)
                    time.sleep(0.5)
                driver.find_element(By.ID, "console-prompt").send_keys(PROMPTS[0])
                driver.find_element(By.ID, "console-send").click()
                wait.until(lambda d: "done in" in d.find_element(By.ID, "console-output").text)
                row = driver.find_element(By.CSS_SELECTOR, "#requests tbody tr")
                wait.until(lambda d: "helper-openai" in row.text)
                row.click()
                wait.until(lambda d: "attempt" in d.find_element(By.ID, "detail-body").text)
                time.sleep(2)  # two more metric points on the charts
                driver.execute_script(
                    "window.scrollTo(0, 0); document.querySelector('#live .scroll').scrollLeft = 0"
                )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.out))
        finally:
            dev.stop()
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
