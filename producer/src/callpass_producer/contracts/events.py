"""The webhook events: the JSON body of a delivery, ``{type, timestamp, data}``.

One ``call.placed`` (data: the PLACED info) and one ``call.completed`` (data: the outcome
document) per request that gave a webhook URL; schemas ``call.placed.v1.json`` and
``call.completed.v1.json``. The headers are Standard Webhooks' (see worker.webhooks.signature).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from callpass_producer.contracts.outcome import OutcomeDocument, OutcomeDocumentV2, Timestamp
from callpass_producer.contracts.placed import PlacedInfo

__all__ = ["COMPLETED_EVENT", "EVENT_TYPES", "PLACED_EVENT", "CallCompleted", "CallPlaced"]

PLACED_EVENT: Final = "call.placed"
COMPLETED_EVENT: Final = "call.completed"
EVENT_TYPES: Final = (PLACED_EVENT, COMPLETED_EVENT)

_HEADERS: Final = (
    "Headers: webhook-id (stable across retries: de-duplicate on it), webhook-timestamp, "
    "webhook-signature (Standard Webhooks, v1 HMAC-SHA256)."
)
_CREATED_AT: Final = "When the event was created (not when this attempt was sent)."


class CallPlaced(BaseModel):
    """The call is ringing: its id and the pin, before the call has ended."""

    model_config = ConfigDict(
        hide_input_in_errors=True,  # errors never show a number or a pin
        frozen=True,
        extra="forbid",
        title="callpass webhook event call.placed, version 1",
        json_schema_extra={
            "description": "Body of a call.placed delivery: the call is ringing; data is the "
            "PLACED info (pin null when CALLPASS_PINS_LEAVE_WORKER=false). " + _HEADERS
        },
    )

    type: Literal["call.placed"] = PLACED_EVENT
    timestamp: Timestamp = Field(description=_CREATED_AT)
    data: PlacedInfo


class CallCompleted(BaseModel):
    """The request settled, whatever the outcome."""

    model_config = ConfigDict(
        hide_input_in_errors=True,  # errors never show a number or a pin
        frozen=True,
        extra="forbid",
        title="callpass webhook event call.completed, version 1",
        json_schema_extra={
            "description": "Body of a call.completed delivery: data is the request's outcome "
            "document (version 2 for a request that passed a version-2 argument). " + _HEADERS
        },
    )

    type: Literal["call.completed"] = COMPLETED_EVENT
    timestamp: Timestamp = Field(description=_CREATED_AT)
    data: OutcomeDocumentV2 | OutcomeDocument
