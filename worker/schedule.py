"""When to ask for a call's status: a schedule that follows the call's life.

A flash call can end any time up to its ``timeout``, and most end exactly at ``timeout`` (the
person does not answer, the switch hangs up). So the schedule polls sparsely while the call
may still ring (every ``interval``), once just after ``timeout`` (``end_slack`` later, when most
calls have their final status), then a few times through the grace period the API may need to
report a final status. All offsets are seconds since the call was placed.
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
    end_slack_s: float = 0.25
    #: Seconds past ``timeout`` after which a call without final status settles as unknown.
    grace_s: float = 15.0

    def offsets(self, timeout_s: float) -> list[float]:
        """Every planned poll offset, ascending."""
        points: list[float] = []
        t = self.interval_s
        # Skip a ringing-phase poll that would land within a second of the end-of-call poll.
        while t < timeout_s + self.end_slack_s - min(1.0, self.interval_s / 2):
            points.append(t)
            t += self.interval_s
        end = timeout_s + self.end_slack_s
        points.append(end)
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
