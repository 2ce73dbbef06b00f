"""The demo batch of ``make run``: enqueue calls, show progress, print one line per call."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from celery import Celery
from celery.result import AsyncResult

from callpass_producer import enqueue_call
from callpass_producer.contracts.names import PLACED
from worker.masking import mask_dn
from worker.pipeline.outbox import Outbox

__all__ = ["DEMO_NUMBERS", "DemoLine", "run_demo"]

#: Sandbox numbers of the simulator, one per outcome (last digit picks it), then a few that
#: follow the simulator's random mix.
DEMO_NUMBERS = (
    "79990001001",  # answered after 1 s
    "79990001002",  # busy after 1 s
    "79990001003",  # no answer, ends at timeout
    "79990001004",  # ORIGINATOR_CANCEL: a cause outside the contract's table
    "79990001006",  # destination not allowed
    "79990001007",  # SUBSCRIBER_ABSENT
    "79161234501",
    "79161234502",
    "79161234503",
    "79161234504",
)

#: Longest the demo waits for its batch, in seconds past the calls' timeout.
DEMO_GRACE_S = 60.0


@dataclass
class DemoLine:
    number: str
    pin: str
    outcome: str
    raw: str
    status_requests: int

    def render(self) -> str:
        return (
            f"{self.number:<14} pin {self.pin:<6} {self.outcome:<14} {self.raw:<24} "
            f"status requests: {self.status_requests}"
        )


def _line(dn: str, doc: dict[str, Any]) -> DemoLine:
    return DemoLine(
        number=mask_dn(dn),
        pin=doc.get("pin") or "-",
        outcome=doc["outcome"],
        raw=doc.get("raw_result") or doc.get("api_message") or "",
        status_requests=int(doc.get("status_requests") or 0),
    )


def run_demo(
    app: Celery,
    outbox: Outbox,
    timeout_s: int = 5,
    numbers: tuple[str, ...] = DEMO_NUMBERS,
    out: TextIO = sys.stdout,
) -> list[DemoLine]:
    """Enqueue one call per number through ``outbox`` (in the workers' Redis) and wait for
    all outcomes, showing progress."""
    started = time.monotonic()
    results: list[tuple[str, AsyncResult[Any]]] = [
        (dn, enqueue_call(app, dn, timeout_s, outbox=outbox)) for dn in numbers
    ]
    print(f"enqueued {len(results)} calls (timeout {timeout_s} s)", file=out, flush=True)
    deadline = started + timeout_s + DEMO_GRACE_S
    done: dict[str, dict[str, Any]] = {}
    pins = 0
    last_shown = ""
    while len(done) < len(results):
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {len(results) - len(done)} calls did not settle in time")
        pins = 0
        for _, result in results:
            if result.id in done:
                continue
            state: str = result.state
            if state == PLACED:
                pins += 1
            elif result.ready():
                value = result.get(propagate=False)
                done[result.id] = value if isinstance(value, dict) else {"outcome": "task failure"}
        placed = pins + sum(1 for d in done.values() if d.get("pin"))
        shown = f"  placed {placed}, settled {len(done)}/{len(results)}"
        if shown != last_shown:
            elapsed = time.monotonic() - started
            print(f"[{elapsed:5.1f}s]{shown}", file=out, flush=True)
            last_shown = shown
        time.sleep(0.2)
    lines = [_line(dn, done[result.id]) for dn, result in results]
    print("", file=out)
    for line in lines:
        print(line.render(), file=out)
    print(
        f"\n{len(lines)} calls settled in {time.monotonic() - started:.1f} s", file=out, flush=True
    )
    return lines
