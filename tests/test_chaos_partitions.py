"""Silent partitions at a small size: workers cut from Redis and from the API, nothing lost,
nobody called twice or late, consuming again within seconds of the heal.

Two of the four rows run here (the other two, one worker of two cut from Redis and a cut from
the API shorter than the deadline, are in ``make chaos``): together they fail on a worker
whose sockets wait for TCP's own give-up, and they keep ``make test`` within its time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import SCENARIOS, Size
from tests.test_chaos import check_row

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("partitions_allowed")]

IN_MAKE_TEST = ("workers-cut-from-redis", "workers-cut-from-api-long")


@pytest.mark.parametrize("name", IN_MAKE_TEST)
def test_a_silent_cut_loses_nothing_and_the_workers_come_back(name: str, tmp_path: Path) -> None:
    check_row(SCENARIOS[name](tmp_path, Size.get("small")))
