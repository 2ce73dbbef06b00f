"""When to ask for a call's status: a schedule that follows the call's life.

A flash call can end any time up to its ``timeout``, and most end exactly at ``timeout`` (the
person does not answer, the switch hangs up). So the schedule polls sparsely while the call
may still ring, once just after ``timeout`` (``end_slack`` later, when most calls have their
final status), then a few times through the grace period the API may need to report a final
status. All offsets are seconds since the call was placed.

The ringing polls are anchored on the end, not on the start: the last one comes half an
interval before ``timeout`` and the others every ``interval`` before it, down to
``first_poll``. A call ending anywhere waits at most one interval for its outcome, and the
first poll lands late enough to catch the earliest endings (a busy signal after a second or
two) instead of asking while nothing can have happened yet. For a 10 s call with a 2 s
interval that is 3, 5, 7, 9 and 10.1 s: five status requests where a one-second tick needs ten.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PollSchedule"]


@dataclass(frozen=True)
class PollSchedule:
    """Status-request offsets for a call of ``timeout`` seconds."""

    #: Seconds between polls while the call may still be ringing, and through the grace.
    interval_s: float = 2.0
    #: Seconds after ``timeout`` for the poll that catches calls ending at ``timeout``.
    end_slack_s: float = 0.1
    #: Seconds past ``timeout`` after which a call without final status settles as unknown.
    grace_s: float = 15.0
    #: No ringing poll before this: hardly any call ends within its first second or so.
    first_poll_s: float = 1.5

    def offsets(self, timeout_s: float) -> list[float]:
        """Every planned poll offset, ascending."""
        ringing: list[float] = []
        t = timeout_s - self.interval_s / 2
        while t >= self.first_poll_s:
            ringing.append(round(t, 6))
            t -= self.interval_s
        end = timeout_s + self.end_slack_s
        points = [*reversed(ringing), end]
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
