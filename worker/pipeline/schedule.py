"""When to ask for a call's status: a schedule that follows the call's life.

A flash call can end any time up to its ``timeout``, and most end exactly at ``timeout`` (the
person does not answer, the switch hangs up). So the schedule polls sparsely while the call
may still ring, once just after ``timeout`` (``end_slack`` later, when most calls have their
final status), then a few times through the grace period the API may need to report a final
status. All offsets are seconds since the call was placed.

The ringing polls divide the time from ``first_poll`` (calls hardly ever end sooner: a busy
signal comes after a second or so) to the end poll into equal steps of at most ``interval``.
A call ending anywhere waits less than one step for its outcome, and no step is wasted: for a
10 s call with a 2 s interval that is 2.82, 4.64, 6.46, 8.28 and 10.1 s, five status requests
where a one-second tick needs ten, each call learning its outcome within 1.82 s plus one
request (with polls every 2 s, the API's round trip would push the slowest past 2 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["START_RETRY_DELAYS_S", "START_RETRY_MAX_DELAY_S", "PollSchedule"]

#: Backoff before re-sending a start that never reached the API, in seconds (then the last).
START_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
START_RETRY_MAX_DELAY_S = max(START_RETRY_DELAYS_S)


@dataclass(frozen=True)
class PollSchedule:
    """Status-request offsets for a call of ``timeout`` seconds."""

    #: Seconds between polls while the call may still be ringing, and through the grace.
    interval_s: float = 2.0
    #: Seconds after ``timeout`` for the poll that catches calls ending at ``timeout``.
    end_slack_s: float = 0.1
    #: Seconds past ``timeout`` after which a call without final status settles as unknown.
    grace_s: float = 15.0
    #: Hardly any call ends sooner: the ringing polls start one step after this.
    first_poll_s: float = 1.0

    def offsets(self, timeout_s: float) -> list[float]:
        """Every planned poll offset, ascending."""
        end = timeout_s + self.end_slack_s
        span = end - self.first_poll_s
        steps = max(1, math.ceil(span / self.interval_s - 1e-9))
        step = span / steps
        ringing = [round(self.first_poll_s + k * step, 6) for k in range(1, steps)]
        points = [*ringing, end]
        t = end + self.interval_s
        while t <= timeout_s + self.grace_s:
            points.append(t)
            t += self.interval_s
        return points

    def deadline(self, timeout_s: float) -> float:
        """Offset past which no final status is expected any more."""
        return timeout_s + self.grace_s

    def next_delay(self, elapsed_s: float, timeout_s: float) -> float | None:
        """Seconds from now to the next poll, or ``None`` once the grace has run out."""
        for offset in self.offsets(timeout_s):
            if offset > elapsed_s:
                return offset - elapsed_s
        return None
