"""A batch of calls from a file of numbers: a progress bar while they ring, a table at the end.

The file is checked whole before anything is sent: one bad line refuses the batch (naming
every bad line and its rule), so a batch is never half placed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.result import AsyncResult
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from callpass_producer.masking import mask_dn
from worker.api.errors import InvalidRequestError
from worker.console.watch import REFRESH_S, CallProgress, phase_style
from worker.validation import validate_dn

__all__ = ["MAX_CALLS", "BatchLine", "read_numbers", "summary_tables", "watch_batch"]

#: Up to this many calls get a row each in the summary; a bigger batch gets the counts only.
ROWS_SHOWN = 50
#: The most calls one batch may place: a file of a million lines is a mistake, not a batch.
MAX_CALLS = 1000


@dataclass(frozen=True)
class BatchLine:
    line: int
    dn: str


def read_numbers(path: Path) -> tuple[list[BatchLine], list[str]]:
    """The numbers of ``path`` (one per line; blank lines and ``#`` comments skipped) and a
    refusal per bad line (``line 3: dn: must be …``): a malformed number, a number already on
    an earlier line (a batch calls each number once), more than :data:`MAX_CALLS` numbers."""
    try:  # utf-8-sig: a byte-order mark (Windows editors) is not part of line 1
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"cannot read it ({type(exc).__name__}: {exc})"]
    numbers: list[BatchLine] = []
    refusals: list[str] = []
    first_line_of: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            dn = validate_dn(entry)
        except InvalidRequestError as exc:
            refusals.append(f"line {number}: {exc.field}: {exc.rule}")
            continue
        if dn in first_line_of:
            refusals.append(f"line {number}: dn: the same number as line {first_line_of[dn]}")
            continue
        first_line_of[dn] = number
        numbers.append(BatchLine(number, dn))
    if len(numbers) > MAX_CALLS:
        refusals.append(f"{len(numbers)} numbers: a batch is at most {MAX_CALLS} calls")
    if not numbers and not refusals:
        refusals.append("the file has no numbers (one per line)")
    return numbers, refusals


def watch_batch(
    console: Console,
    calls: Sequence[tuple[AsyncResult[Any], CallProgress]],
    wait_s: float,
    on_change: Callable[[CallProgress], None] | None = None,
) -> None:
    """Follow every call until all settle or ``wait_s`` pass, with a bar of placed and settled."""
    columns = (
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    deadline = time.monotonic() + wait_s
    with Progress(*columns, console=console, transient=False) as bar:
        placed = bar.add_task("placed", total=len(calls))
        settled = bar.add_task("settled", total=len(calls))
        while time.monotonic() < deadline:
            for result, progress in calls:
                if not progress.done and progress.update(result) and on_change:
                    on_change(progress)
            bar.update(placed, completed=sum(p.placed is not None for _, p in calls))
            bar.update(settled, completed=sum(p.done for _, p in calls))
            if all(p.done for _, p in calls):
                break
            time.sleep(REFRESH_S)


def summary_tables(calls: Sequence[CallProgress], lines: Sequence[BatchLine]) -> list[Table]:
    """A row per call (small batches), then the count of each outcome."""
    tables = []
    if len(calls) <= ROWS_SHOWN:
        rows = Table(title="calls", title_justify="left")
        for name in ("line", "number", "pin", "outcome", "seconds"):
            rows.add_column(name, justify="right" if name in ("line", "seconds") else "left")
        for line, progress in zip(lines, calls, strict=True):
            pin = str(progress.placed.get("pin")) if progress.placed else "-"
            rows.add_row(
                str(line.line),
                mask_dn(line.dn),
                pin,
                f"[{phase_style(progress.phase)}]{progress.phase}[/]",
                f"{progress.elapsed_s():.1f}",
            )
        tables.append(rows)
    counts = Counter(p.phase for p in calls)
    totals = Table(title=f"{len(calls)} calls", title_justify="left")
    totals.add_column("outcome")
    totals.add_column("calls", justify="right")
    for phase, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        totals.add_row(f"[{phase_style(phase)}]{phase}[/]", str(count))
    tables.append(totals)
    return tables
