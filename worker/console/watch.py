"""One call as a person watches it: queued → ringing, with the pin → outcome, and the time.

On a terminal the line is redrawn in place (rich's ``Live``) with the elapsed time against the
call's timeout; elsewhere (a pipe, a log) each phase is printed once, as it is reached. The
number is shown masked, the pin in full: reading it is what the command is for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

from celery.result import AsyncResult
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from callpass_producer.contracts.names import PLACED
from callpass_producer.masking import mask_dn

__all__ = ["CallProgress", "phase_style", "watch_call"]

#: How often the result backend is read and the line redrawn, in seconds.
REFRESH_S = 0.1
#: Outcomes that are good news, shown green; other settled outcomes are yellow, failures red
#: (requests that could not be made as asked: look at the worker or the request).
GOOD_OUTCOMES = frozenset({"answered"})
FAILED_OUTCOMES = frozenset({"invalid", "api_error", "auth_failed", "unknown", "expired"})


@dataclass
class CallProgress:
    """What is known of one request so far, read from its result."""

    task_id: str
    dn: str
    timeout_s: int
    started: float = field(default_factory=time.monotonic)
    placed: dict[str, Any] | None = None
    placed_after_s: float | None = None
    document: dict[str, Any] | None = None
    failure: str | None = None
    settled_after_s: float | None = None

    @property
    def phase(self) -> str:
        if self.document is not None:
            return str(self.document.get("outcome", "settled"))
        if self.failure is not None:
            return "failed"
        return "ringing" if self.placed is not None else "queued"

    @property
    def done(self) -> bool:
        return self.document is not None or self.failure is not None

    def elapsed_s(self) -> float:
        """Seconds since it was sent, until it settled."""
        if self.settled_after_s is not None:
            return self.settled_after_s
        return time.monotonic() - self.started

    def update(self, result: AsyncResult[Any]) -> bool:
        """Read the result once; True when the phase changed."""
        before = self.phase
        state: str = result.state  # celery-types knows only Celery's own states
        if state == PLACED and self.placed is None:
            self.placed, self.placed_after_s = dict(result.info), self.elapsed_s()
        elif state == "SUCCESS":
            self.document = cast(dict[str, Any], result.result)
            if self.placed is None and self.document.get("pin"):
                self.placed = {k: self.document.get(k) for k in ("callid", "pin")}
        elif state == "FAILURE":
            self.failure = str(type(result.result).__name__)
        if self.done and self.settled_after_s is None:
            self.settled_after_s = self.elapsed_s()
        return self.phase != before

    def describe(self) -> Text:
        """The one line that says where the call is."""
        line = Text()
        line.append(f"{self.phase:<13}", style=phase_style(self.phase))  # rate_limited, …
        line.append(f" {mask_dn(self.dn)}")
        if self.placed is not None:
            line.append("  pin ")
            line.append(str(self.placed.get("pin")), style="bold")
        if self.placed_after_s is not None and not self.done:
            ringing_s = self.elapsed_s() - self.placed_after_s
            line.append(f"  {ringing_s:4.1f} s of {self.timeout_s} s", style="dim")
        line.append(f"  {self.elapsed_s():5.1f} s in all", style="dim")
        if self.document is not None:
            line.append(_why(self.document))
        return line


def _why(document: dict[str, Any]) -> str:
    """What a settled request's document says beyond its outcome: the refused field and
    rule, or (version 2) the product's next step when it is not just waiting for the code."""
    error = document.get("error")
    if isinstance(error, dict):
        return f"  {error.get('field')}: {error.get('rule')}"
    step, at = document.get("next_step"), document.get("next_step_at")
    if step in (None, "none", "wait_for_code"):
        return ""
    return f"  next: {step}" + (f" at {at}" if at else "")


def phase_style(phase: str) -> str:
    """The colour a phase or an outcome is shown in."""
    if phase in ("queued", "ringing"):
        return "cyan"
    if phase in GOOD_OUTCOMES:
        return "bold green"
    return "bold red" if phase in FAILED_OUTCOMES or phase == "failed" else "yellow"


def watch_call(
    console: Console, result: AsyncResult[Any], progress: CallProgress, wait_s: float
) -> CallProgress:
    """Follow ``result`` until it settles or ``wait_s`` pass; the progress as it ends."""
    deadline = time.monotonic() + wait_s
    if console.is_terminal:
        with Live(_live_view(progress), console=console, refresh_per_second=10) as live:
            while not progress.done and time.monotonic() < deadline:
                progress.update(result)
                live.update(_live_view(progress))
                time.sleep(REFRESH_S)
        return progress
    console.print(progress.describe())
    while not progress.done and time.monotonic() < deadline:
        if progress.update(result):
            console.print(progress.describe())
        else:
            time.sleep(REFRESH_S)
    return progress


def _live_view(progress: CallProgress) -> Table:
    grid = Table.grid(padding=(0, 1))
    marker = Spinner("dots", style="cyan") if not progress.done else Text("•")
    grid.add_row(marker, progress.describe())
    return grid
