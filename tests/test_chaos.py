"""The chaos scenarios at a small size: real processes broken on purpose, nothing lost.

``make chaos`` runs the same scenarios at full size and prints the table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import SCENARIOS, Size
from chaos.scenarios import PARTITION_ROWS

pytestmark = pytest.mark.chaos


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_request_settles_once_and_nobody_is_called_twice(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if name in PARTITION_ROWS:
        request.getfixturevalue("partitions_allowed")  # skips, or fails in CI, naming why
    row = SCENARIOS[name](tmp_path, Size.get("small"))
    print(row.render())
    assert row.lost == 0, row.problems
    assert row.double_dials == 0
    assert row.settled == row.requests
    assert not row.problems, row.problems
