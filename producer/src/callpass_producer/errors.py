"""The one error a producer handles: arguments that break a rule of the contract."""

from __future__ import annotations

__all__ = ["InvalidArguments"]


class InvalidArguments(ValueError):
    """An argument broke a rule of the contract; nothing was sent.

    ``field`` names the argument, ``rule`` says what it must be (the worker's own words: the
    same rule a worker would settle the request ``invalid`` with).
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(field, rule)  # both: Celery and pickle rebuild it from its args
        self.field = field
        self.rule = rule

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"
