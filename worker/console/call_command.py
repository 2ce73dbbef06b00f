"""``callpass call``: one number, or a file of them, placed and (with ``--wait``) followed.

Three ways to show it: a live line (or a progress bar and a summary) on a terminal, a line per
phase in a pipe, and ``--json`` for scripts (one JSON object per call, on stdout). Input is
checked before anything is sent; a refusal names the field (or the line) and the rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from rich.console import Console

from callpass_producer import InvalidArguments, enqueue_call
from callpass_producer.arguments import check_start_arguments
from callpass_producer.outbox import OutboxNotes
from worker.api.errors import InvalidRequestError
from worker.console.batch import BatchLine, read_numbers, summary_tables, watch_batch
from worker.console.watch import CallProgress, watch_call
from worker.masking import error_line
from worker.validation import validate_dn, validate_request_id, validate_timeout

__all__ = ["run_call"]


def run_call(args: argparse.Namespace, app: Celery, outbox: OutboxNotes, timeout_s: int) -> int:
    """``timeout_s``: the calls' timeout when ``--timeout`` gives none (the workers' default)."""
    refusal = _refusal(args)
    if refusal:
        _complain(refusal)
        return 2
    if args.file is not None:
        lines, refusals = read_numbers(args.file)
        if refusals:
            for refusal_of_line in refusals:
                _complain(f"{args.file}: {refusal_of_line}")
            _complain("nothing was sent")
            return 2
    else:
        lines = [BatchLine(0, args.dn)]
    ring_s = args.timeout or timeout_s
    calls: list[tuple[AsyncResult[Any], CallProgress]] = []
    for line in lines:
        try:
            result = _send(app, outbox, line.dn, args)
        except Exception as exc:  # the broker or Redis went away: say what was sent
            return _sending_stopped(calls, lines, exc)
        calls.append((result, CallProgress(str(result.id), line.dn, ring_s)))
    try:
        return _follow(args, calls, lines)
    except KeyboardInterrupt:
        unsettled = [(line, p) for line, (_, p) in zip(lines, calls, strict=True) if not p.done]
        _complain(f"interrupted: {len(unsettled)} call(s) not settled yet; the workers go on")
        _name_task_ids(unsettled)
        return 130


def _sending_stopped(
    calls: list[tuple[AsyncResult[Any], CallProgress]], lines: list[BatchLine], exc: Exception
) -> int:
    _complain(
        f"sending stopped after {len(calls)} of {len(lines)} call(s): "
        f"{type(exc).__name__}: {error_line(exc)}"
    )
    _name_task_ids([(line, progress) for line, (_, progress) in zip(lines, calls, strict=False)])
    if len(calls) < len(lines) and lines[len(calls)].line:
        _complain(f"not sent: line {lines[len(calls)].line} and every line after it")
    return 1


def _name_task_ids(calls: list[tuple[BatchLine, CallProgress]]) -> None:
    """A line per call, so each can be read later (``callpass result TASK_ID``)."""
    for line, progress in calls:
        where = f"line {line.line}: " if line.line else ""
        _complain(f"{where}task id {progress.task_id} (callpass result {progress.task_id})")


def _complain(text: str) -> None:
    # Plain lines, never wrapped: a refusal is read by people and grepped by scripts.
    print(f"callpass call: {text}", file=sys.stderr, flush=True)


def _refusal(args: argparse.Namespace) -> str | None:
    if args.dn is None and args.file is None:
        return "give a number, or --file with one number per line"
    if args.dn is not None and args.file is not None:
        return "give a number or --file, not both"
    if args.file is not None and (args.request_id or args.verification_id):
        return "--request-id, --verification-id: one id cannot name a batch of calls"
    if args.resend and args.verification_id is None:
        return "--resend: needs --verification-id (the verification to call again)"
    try:
        if args.dn is not None:
            validate_dn(args.dn)
        if args.timeout is not None:
            validate_timeout(args.timeout)
        if args.request_id is not None:
            validate_request_id(args.request_id)
        if args.verification_id is not None:
            check_start_arguments((), {"dn": args.dn, "verification_id": args.verification_id})
    except (InvalidRequestError, InvalidArguments) as exc:
        return f"{exc.field}: {exc.rule}"
    if args.file is not None and not args.file.is_file():
        return f"--file: {args.file} is not a file"
    return None


def _send(app: Celery, outbox: OutboxNotes, dn: str, args: argparse.Namespace) -> AsyncResult[Any]:
    version_2 = {"verification_id": args.verification_id, "resend": args.resend or None}
    return enqueue_call(
        app, dn, args.timeout, request_id=args.request_id, outbox=outbox, **version_2
    )


def _follow(
    args: argparse.Namespace,
    calls: list[tuple[AsyncResult[Any], CallProgress]],
    lines: list[BatchLine],
) -> int:
    out = Console(highlight=False, soft_wrap=True)  # a line per phase, never wrapped
    if args.json:
        out = Console(file=sys.stderr, highlight=False, quiet=True)  # stdout is the JSON's
    elif args.file is not None:
        out.print(f"sent {len(calls)} calls from {args.file}", markup=False)
        if not args.wait:
            for line, (result, _) in zip(lines, calls, strict=True):
                out.print(f"line {line.line}: task id {result.id}", markup=False)
    else:
        out.print(f"task id: {calls[0][0].id}", markup=False)
    try:
        if args.wait:
            _watch(out, args, calls, lines)
    finally:  # also when interrupted: what is known so far
        if args.json:
            for line, (_, progress) in zip(lines, calls, strict=True):
                print(json.dumps(_as_json(progress, line if args.file else None)), flush=True)
    unsettled = [(line, p) for line, (_, p) in zip(lines, calls, strict=True) if not p.done]
    if args.wait and unsettled:
        _complain(
            f"{len(unsettled)} call(s) not settled within {args.wait_timeout:g} s "
            "(--wait-timeout); they go on, and can be read later:"
        )
        _name_task_ids(unsettled)
        return 1
    return 0


def _watch(
    out: Console,
    args: argparse.Namespace,
    calls: list[tuple[AsyncResult[Any], CallProgress]],
    lines: list[BatchLine],
) -> None:
    if args.file is None:
        watch_call(out, calls[0][0], calls[0][1], args.wait_timeout)
        return
    watch_batch(out, calls, args.wait_timeout)
    for table in summary_tables([p for _, p in calls], lines):
        out.print(table)


def _as_json(progress: CallProgress, line: BatchLine | None) -> dict[str, Any]:
    shown: dict[str, Any] = {"task_id": progress.task_id, "phase": progress.phase}
    if line is not None:
        shown["line"] = line.line
    if progress.placed is not None:
        shown["callid"], shown["pin"] = progress.placed.get("callid"), progress.placed.get("pin")
    if progress.done:
        shown["outcome"] = progress.document
        shown["seconds"] = round(progress.elapsed_s(), 3)
    return shown
