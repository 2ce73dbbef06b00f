"""The chaos scenarios at a small size: real processes broken on purpose, nothing lost.

``make chaos`` runs the same scenarios at full size and prints the table. The partition rows
are in ``tests/test_chaos_partitions.py``, so the two files run side by side.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import SCENARIOS, Size
from chaos.harness import Row
from chaos.scenarios import PARTITION_ROWS

pytestmark = pytest.mark.chaos


def check_row(row: Row) -> None:
    print(row.render())
    assert row.lost == 0, row.problems
    assert row.double_dials == 0
    assert row.settled == row.requests
    assert not row.problems, row.problems


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - PARTITION_ROWS))
def test_every_request_settles_once_and_nobody_is_called_twice(name: str, tmp_path: Path) -> None:
    check_row(SCENARIOS[name](tmp_path, Size.get("small")))
