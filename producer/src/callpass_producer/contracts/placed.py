"""What a producer reads while the call rings: ``AsyncResult(<start_call id>).info`` in state
``PLACED``, and the ``data`` of a ``call.placed`` webhook event (``schemas/placed.v1.json``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from callpass_producer.contracts.outcome import Pin, Timeout, Timestamp

__all__ = ["PlacedInfo"]


class PlacedInfo(BaseModel):
    """The call is placed: its id and the pin, at once, before the call has ended."""

    model_config = ConfigDict(
        hide_input_in_errors=True,  # errors never show a number or a pin
        frozen=True,
        extra="forbid",
        title="callpass PLACED state info, version 1",
        json_schema_extra={
            "description": "AsyncResult(<start_call task id>).info while .state == 'PLACED'."
        },
    )

    request_id: str
    callid: str
    pin: Pin | None = Field(
        description="null when CALLPASS_PINS_LEAVE_WORKER=false: "
        "check codes with callpass.verify_code."
    )
    placed_at: Timestamp
    timeout: Timeout
