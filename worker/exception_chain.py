"""Finding one error inside another: HTTP libraries wrap what went wrong several times over.

requests wraps urllib3's errors (in ``args``), urllib3 keeps its own cause in ``reason``, and
Python links ``__cause__`` and ``__context__``. A TLS certificate refusal or a webhook
destination refusal can sit at any depth of that graph.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["find_in_chain"]

E = TypeVar("E", bound=BaseException)


def find_in_chain(exc: BaseException, kind: type[E] | tuple[type[E], ...]) -> E | None:
    """The first error of ``kind`` (a type or a tuple of them) reachable from ``exc``: itself,
    its cause and context, urllib3's ``reason``, errors among its ``args``; else ``None``.
    Cycles are walked once."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        # `reason` is urllib3's wrapped error (ssl.SSLError has a string `reason`: skipped).
        linked = (getattr(current, "reason", None), current.__cause__, current.__context__)
        pending.extend(e for e in (*linked, *current.args) if isinstance(e, BaseException))
    return None
