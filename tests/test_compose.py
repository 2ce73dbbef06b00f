"""docker-compose.yml is valid and scalable, checked offline with Debian's docker-compose."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: `make test` installs it (apt-get docker-compose)")
    out = subprocess.run(
        [binary, "--file", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return dict(yaml.safe_load(out.stdout))


def test_compose_has_the_four_services(compose: dict[str, object]) -> None:
    services = compose["services"]
    assert isinstance(services, dict)
    assert {"redis", "simulator", "worker", "flower"} <= set(services)


def test_the_worker_can_be_scaled(compose: dict[str, object]) -> None:
    worker = compose["services"]["worker"]  # type: ignore[index]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["CALLPASS_REDIS_URL"] == "redis://redis:6379/0"


def test_flower_is_published_on_loopback_with_auth(compose: dict[str, object]) -> None:
    flower = compose["services"]["flower"]  # type: ignore[index]
    # The login comes from the settings; without it, the guard refuses to listen on 0.0.0.0.
    assert "CALLPASS_FLOWER_BASIC_AUTH" in flower["environment"]
    assert not any("--basic-auth" in part for part in flower["command"])
    assert flower["command"][:2] == ["callpass", "flower"]  # the always-guarded entry point
    published = json.dumps(flower["ports"])
    assert "127.0.0.1" in published


def test_the_image_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER callpass\n" in dockerfile


def test_the_image_build_copies_what_the_package_build_needs() -> None:
    """pyproject names README.md and LICENSE: without them in the build stage, pip fails."""
    copied = " ".join(
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
    )
    for needed in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "worker",
        "tasks",
        "simulator",
        "producer/src",
    ):
        assert needed in copied
