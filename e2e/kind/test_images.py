"""The project's images, inspected with the Docker engine that built them: what they hold, who they
run as, how big they are."""

from __future__ import annotations

import json
import subprocess

import pytest

from e2e.kind.cluster import KindImages
from tests.support import locks

# Distributions the runtime image must not contain (operator-only or cloud SDKs).
NOT_IN_RUNTIME = (
    "kopf",
    "kubernetes",
    "boto3",
    "botocore",
    "hvac",
    "azure-identity",
    "azure-keyvault-secrets",
)

LIST_DISTRIBUTIONS = "import importlib.metadata as m, json; print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))"


def _inspect(image: str) -> dict[str, object]:
    out = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True)
    found: dict[str, object] = json.loads(out.stdout)[0]
    return found


def _python_in(image: str, code: str) -> object:
    """What ``code`` (run by the image's python) prints, as JSON."""
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", image, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _distributions(image: str) -> set[str]:
    found = _python_in(image, LIST_DISTRIBUTIONS)
    assert isinstance(found, list)
    return set(found)


@pytest.fixture(scope="module")
def docker_images(kind_images: KindImages) -> KindImages:
    """The images, when the local Docker engine has them (not so for an E2E_KUBECONFIG cluster)."""
    for image in (kind_images.operator, kind_images.runtime):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode:
            pytest.skip(f"{image} is not in the local Docker engine")
    return kind_images


def test_runtime_image_holds_no_operator_or_cloud_sdk(docker_images: KindImages) -> None:
    present = _distributions(docker_images.runtime)
    assert {"httpx", "starlette", "uvicorn", "pydantic", "redis"} <= present
    assert not present & set(NOT_IN_RUNTIME), present & set(NOT_IN_RUNTIME)


def test_operator_image_holds_the_operator_extra(docker_images: KindImages) -> None:
    present = _distributions(docker_images.operator)
    assert {"kopf", "aiohttp", "httpx", "pydantic", "hvac", "boto3"} <= present
    # Its API requests go through aiohttp (kube.py): no Kubernetes client library in the image.
    assert "kubernetes" not in present


@pytest.mark.parametrize("which", ["operator", "runtime"])
def test_image_runs_as_non_root_and_prints_its_size(docker_images: KindImages, which: str) -> None:
    image = getattr(docker_images, which)
    meta = _inspect(image)
    config = meta["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "65532:65532"
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", image, "-u"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "65532"
    size = meta["Size"]
    assert isinstance(size, int)
    print(f"\n{which} image {image}: {size / 1e6:.0f} MB")


LIST_VERSIONS = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"


@pytest.mark.parametrize("which", ["operator", "runtime"])
def test_image_holds_exactly_its_hashed_lock(docker_images: KindImages, which: str) -> None:
    versions = _python_in(getattr(docker_images, which), LIST_VERSIONS)
    assert isinstance(versions, dict)
    present = {locks.normal(name): version for name, version in versions.items()}
    # requirements/<which>.txt and pip.txt; the venv's own setuptools is the only other guest.
    locked = {pin.name: pin.version for name in (which, "pip") for pin in locks.pins(name)}
    assert {name: present[name] for name in present if name in locked} == {
        name: version for name, version in locked.items() if name in present
    }
    assert set(present) - set(locked) <= {"setuptools"}, set(present) - set(locked)
