"""LiteLLM proxy for the side-by-side bench: its own venv in the cache, pinned, default settings.

Installed from PyPI on first use into ``<cache>/bench-compare/litellm-<version>``
(never into the project's venv), every dependency pinned by litellm-constraints.txt.
Configured with one OpenAI-compatible model pointing at the fake upstream, a master
key (callers authenticate, as they do on the runtime) and one worker; everything
else is LiteLLM's default (uvicorn's access log included).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from bench.compare.tools import cache_dir

LITELLM_VERSION = "1.108.7"
CONSTRAINTS = Path(__file__).resolve().parent / "litellm-constraints.txt"
MODEL = "fake-model"


def ensure_venv() -> Path:
    """The venv holding the pinned LiteLLM proxy; installed on first use (about 2 minutes, 750 MB)."""
    venv = cache_dir() / f"litellm-{LITELLM_VERSION}"
    stamp = venv / ".installed"
    wanted = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return venv
    print(f"installing LiteLLM proxy {LITELLM_VERSION} into {venv} (first use only)", flush=True)
    # The venv takes the base interpreter of the one running the bench, not the project's venv.
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "install", "-c", str(CONSTRAINTS), f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
    )
    stamp.write_text(wanted + "\n")
    return venv


def write_config(path: Path, upstream_port: int, upstream_key: str, master_key: str) -> None:
    """The proxy config: one model on the fake upstream, a master key, nothing else."""
    # JSON is YAML: no YAML library needed in the project's venv for this.
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": upstream_key,
                },
            }
        ],
        "general_settings": {"master_key": master_key},
    }
    path.write_text(json.dumps(config, indent=2) + "\n")


def command(venv: Path, config: Path, port: int) -> list[str]:
    """The proxy's command line: one worker on loopback."""
    return [
        str(venv / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


def environment(base: dict[str, str]) -> dict[str, str]:
    """The proxy's environment: the packaged model cost map (no fetch from the internet at start)."""
    return {**base, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def version(venv: Path) -> str:
    """Installed LiteLLM version, read from the venv."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or LITELLM_VERSION
