"""What a product should do next, from how its request ended: ``next_step`` of a version-2
outcome document. The table is the README's ("What to do next"); a product owner reads it
there, a producer in another language reads the field.
"""

from __future__ import annotations

from typing import Final

from callpass_producer.contracts.outcome import NextStep, Outcome

__all__ = ["next_step_of"]

#: The call rang the phone: its caller ID, whose last digits are the code, is on the screen.
_RANG: Final = frozenset(
    {Outcome.ANSWERED, Outcome.NO_ANSWER, Outcome.REJECTED, Outcome.NOT_ANSWERED}
)
#: The call did not reach the phone, or could not be made: another channel can.
_OTHER_CHANNEL: Final = frozenset(
    {
        Outcome.BUSY,
        Outcome.NOT_DELIVERED,
        Outcome.NETWORK_TROUBLE,
        Outcome.API_ERROR,
        Outcome.AUTH_FAILED,
        Outcome.EXPIRED,
    }
)


def next_step_of(
    outcome: Outcome, *, callid: str | None, error_field: str | None, retry_at: str | None
) -> NextStep:
    """The next step of a request that ended with ``outcome``.

    ``callid``: the call's id, if one was placed (an ``unknown`` call with an id may have
    rung, and its code still checks); ``error_field``: the refused field of an ``invalid``
    request; ``retry_at``: when a ``rate_limited`` request may be tried again (none: a cap
    that does not lift, so another channel is the way).
    """
    if outcome in _RANG:
        return NextStep.WAIT_FOR_CODE
    if outcome in _OTHER_CHANNEL:
        return NextStep.OTHER_CHANNEL
    if outcome == Outcome.UNKNOWN:
        return NextStep.WAIT_FOR_CODE if callid else NextStep.OTHER_CHANNEL
    if outcome == Outcome.BAD_NUMBER:
        return NextStep.ASK_FOR_NUMBER
    if outcome == Outcome.RATE_LIMITED:
        return NextStep.RETRY_LATER if retry_at else NextStep.OTHER_CHANNEL
    # invalid: a number that breaks the rules is the user's to fix; anything else is a bug.
    return NextStep.ASK_FOR_NUMBER if error_field == "dn" else NextStep.NONE
