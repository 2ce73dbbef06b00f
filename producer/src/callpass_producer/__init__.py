"""callpass-producer: start flash-call verifications on callpass workers, check the codes.

Nothing of the worker: celery, redis and pydantic only. Importing it does nothing but
import (no Celery app, no connection)::

    Verifier, Verification   a verification as a Python service sees it  (verifier)
    enqueue_call, ...        the same for a service with a Celery app    (sending)
    InvalidArguments         an argument broke a rule; nothing was sent  (errors)
    contracts                task and queue names, the message models    (contracts/)
    OutboxNotes              the note that guards a message the broker loses (outbox)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from callpass_producer.contracts.names import (
        CODE_QUEUE_SUFFIX,
        DEFAULT_QUEUE,
        PLACED,
        START_TASK,
        VERIFY_TASK,
    )
    from callpass_producer.errors import InvalidArguments
    from callpass_producer.outbox import OutboxNotes
    from callpass_producer.sending import enqueue_call, verify_code, wait_for_pin
    from callpass_producer.verifier import Verification, Verifier

# Loaded on first use (PEP 562): ``import callpass_producer.contracts`` needs pydantic only,
# not Celery or Redis.
_HOMES = {
    "CODE_QUEUE_SUFFIX": "contracts.names",
    "DEFAULT_QUEUE": "contracts.names",
    "PLACED": "contracts.names",
    "START_TASK": "contracts.names",
    "VERIFY_TASK": "contracts.names",
    "InvalidArguments": "errors",
    "OutboxNotes": "outbox",
    "enqueue_call": "sending",
    "verify_code": "sending",
    "wait_for_pin": "sending",
    "Verification": "verifier",
    "Verifier": "verifier",
}


if not TYPE_CHECKING:  # type checkers read the imports above, and refuse a misspelt name

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        globals()[name] = value  # loaded once
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "CODE_QUEUE_SUFFIX",
    "DEFAULT_QUEUE",
    "PLACED",
    "START_TASK",
    "VERIFY_TASK",
    "InvalidArguments",
    "OutboxNotes",
    "Verification",
    "Verifier",
    "enqueue_call",
    "verify_code",
    "wait_for_pin",
]
