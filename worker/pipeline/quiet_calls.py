"""Calls to test numbers (``CALLPASS_TEST_NUMBERS``): placed and settled as a call that rang
would be, with the number's fixed pin, and never sent to the API. Their call ids carry a
prefix the API's never do, so any step that would ask the API about one (a poll of a chain a
redelivery or the sweeper started) settles it instead."""

from __future__ import annotations

import uuid
from typing import Final

from callpass_producer.contracts.outcome import Outcome
from worker.pipeline.settlement import Settler
from worker.pipeline.store import RequestRecord

__all__ = ["is_quiet_call", "quiet_callid", "settle_quiet_call"]

#: The API's call ids are UUIDs: none starts with this.
_PREFIX: Final = "test-"


def quiet_callid() -> str:
    return _PREFIX + uuid.uuid4().hex


def is_quiet_call(callid: str) -> bool:
    return callid.startswith(_PREFIX)


def settle_quiet_call(settler: Settler, record: RequestRecord) -> None:
    settler.settle(
        record,
        Outcome.ANSWERED,
        raw_result="TEST_NUMBER",
        api_message="a test number (CALLPASS_TEST_NUMBERS): no call was made",
    )
