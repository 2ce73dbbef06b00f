"""The states of a request record, shared with the Lua scripts of :mod:`worker.pipeline.store`.

::

    claimed ──CAS──▶ dialing ──▶ placed ──▶ settled
       │                │
       └────────────────┴──────▶ settled (invalid, api_error, unknown, expired, …)

The scripts never spell a state: the store passes the values below to them as arguments.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RequestState"]


class RequestState(StrEnum):
    #: Recorded; no start request sent yet (or one that never reached the API).
    CLAIMED = "claimed"
    #: One delivery is sending the start request: nobody else may.
    DIALING = "dialing"
    #: The API placed the call; polls ask for its outcome.
    PLACED = "placed"
    #: The outcome is written; it never changes again.
    SETTLED = "settled"
