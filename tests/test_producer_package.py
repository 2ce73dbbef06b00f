"""The producer package installed alone, as a producing service installs it: into an empty
virtual environment, with nothing of the worker, and a verification run through it against a
real worker."""

from __future__ import annotations

import json
import subprocess
import textwrap
import venv
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import unique_dn

ROOT = Path(__file__).resolve().parent.parent
#: What the worker needs and a producer must not get.
WORKER_ONLY = {"callpass-worker", "flower", "prometheus-client", "aiohttp", "pydantic-settings"}

VERIFY = textwrap.dedent(
    """
    import importlib.util, json, sys
    from callpass_producer import InvalidArguments, Verifier

    redis_url, dn = sys.argv[1], sys.argv[2]
    verifier = Verifier(redis_url)
    try:
        verifier.start("12345", timeout=5)
    except InvalidArguments as exc:
        refused = {"field": exc.field, "rule": exc.rule}
    v = verifier.start(dn, timeout=3, verification_id=sys.argv[3])
    placed = verifier.pin(v)
    check = verifier.check_code(v, placed["pin"])
    doc = verifier.outcome(v)
    verifier.close()
    alone = importlib.util.find_spec("worker") is None and importlib.util.find_spec("tasks") is None
    seen = {"refused": refused, "placed": placed, "check": check, "doc": doc, "alone": alone}
    print(json.dumps(seen))
    """
)


@pytest.fixture(scope="module")
def producer_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with only ``callpass-producer`` (and what it depends on)."""
    home = tmp_path_factory.mktemp("producer-venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", ROOT / "producer"],
        check=True,
        timeout=600,
        capture_output=True,
    )
    return python


def _installed(python: Path) -> set[str]:
    listing = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    return {str(p["name"]).lower().replace("_", "-") for p in json.loads(listing)}


def test_the_package_installs_without_anything_of_the_worker(producer_env: Path) -> None:
    installed = _installed(producer_env)
    assert {"callpass-producer", "celery", "redis", "pydantic"} <= installed
    assert not WORKER_ONLY & installed, f"the producer pulled in {WORKER_ONLY & installed}"


@pytest.mark.usefixtures("worker")
def test_a_verification_through_the_installed_package(
    producer_env: Path, redis_url: str, sim: Any
) -> None:
    dn = unique_dn("1")
    run = subprocess.run(
        [producer_env, "-c", VERIFY, redis_url, dn, f"pkg-{dn}"],
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
        cwd=producer_env.parent,  # not the checkout: only the installed package is importable
    )
    seen = json.loads(run.stdout)
    assert seen["alone"], "the checkout's worker was importable beside the package"
    assert seen["refused"]["field"] == "dn"
    placed_at_api = [c for c in sim.calls() if c["dn"] == dn]
    assert [c["pin"] for c in placed_at_api] == [seen["placed"]["pin"]]
    assert seen["check"] == {"valid": True, "reason": "ok", "attempts_left": 2}
    assert seen["doc"]["verification_id"] == f"pkg-{dn}"
    assert seen["doc"]["outcome"] == "answered"
