"""The chaos suite: break the real pieces on purpose and count what survives.

``python -m chaos`` (``make chaos``) runs every scenario at full size and prints one table row
each; ``tests/test_chaos.py`` runs the same scenarios smaller inside ``make test``.
"""

from chaos.harness import Harness, Row
from chaos.scenarios import SCENARIOS, Size

__all__ = ["SCENARIOS", "Harness", "Row", "Size"]
