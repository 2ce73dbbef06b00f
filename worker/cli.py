"""``callpass``: the operator's command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callpass", description="Flash-call verification worker.")
    sub = p.add_subparsers(dest="command", required=True)
    from worker.console.options import add_call_options

    add_call_options(
        sub.add_parser(
            "call", help="place a call (or a file of them); --wait follows them to the outcome"
        )
    )
    result = sub.add_parser("result", help="show the state of a start_call task id")
    result.add_argument("task_id")
    sub.add_parser(
        "simulator", help="run the API simulator (options: callpass simulator -h)", add_help=False
    )
    sub.add_parser(
        "flower",
        help="Flower with our app, refused when anyone could get in without a password "
        "(Flower's options: callpass flower --help)",
        add_help=False,
    )
    sub.add_parser("config", help="validate the CALLPASS_* settings and print them (no secrets)")
    health = sub.add_parser(
        "healthcheck", help="liveness probe: exit 0 when the worker's heartbeat file is fresh"
    )
    health.add_argument("--max-age-s", type=float, default=60.0, metavar="SECONDS")
    ready = sub.add_parser(
        "readycheck",
        help="readiness probe: exit 0 when the settings are valid, Redis and the broker answer "
        "and (with CALLPASS_HEARTBEAT_FILE) the worker's heartbeat is fresh",
    )
    ready.add_argument("--max-age-s", type=float, default=60.0, metavar="SECONDS")
    _webhooks_commands(sub.add_parser("webhooks", help="dead-lettered webhook events; new secrets"))
    _run_options(sub.add_parser("run", help="local stack + demo batch (what make run does)"))
    return p


def _webhooks_commands(hooks: argparse.ArgumentParser) -> None:
    hooks_sub = hooks.add_subparsers(dest="webhooks_command", required=True)
    dead = hooks_sub.add_parser("dead", help="list events whose every attempt failed")
    dead.add_argument("--limit", type=int, default=100)
    dead.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = hooks_sub.add_parser(
        "replay", help="send dead events again (same webhook-id, fresh retry schedule)"
    )
    replay.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    replay.add_argument("--all", action="store_true", help="every dead event")
    hooks_sub.add_parser("new-secret", help="print a new whsec_ signing secret")


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--exit-after-demo",
        action="store_true",
        help="stop everything once the demo batch is printed (for scripts)",
    )
    run.add_argument("--demo-timeout", type=int, default=5, help="timeout of the demo calls")
    run.add_argument("--flower-port", type=int, default=5555, help="0 picks a free port")
    run.add_argument("--run-dir", default=".run", help="logs and data of this run")


def _cmd_call(args: argparse.Namespace) -> int:
    from worker.celery_app import app
    from worker.console.call_command import run_call
    from worker.producer import default_outbox
    from worker.settings import load_settings

    settings = load_settings()
    return run_call(args, app, default_outbox(settings), settings.default_call_timeout_s)


def _cmd_result(args: argparse.Namespace) -> int:
    from worker.celery_app import app

    res = app.AsyncResult(args.task_id)
    info = res.info
    shown: dict[str, object] = {
        "state": res.state,
        "info": info if isinstance(info, dict) else None,
    }
    if res.state == "PENDING":  # Celery's word for "no result stored under this id"
        shown["note"] = "queued, or an id no worker has seen (or whose result has expired)"
    print(json.dumps(shown, indent=2))
    return 0


def _cmd_config() -> int:
    from worker.settings import load_settings
    from worker.settings.display import shown_setting

    settings = load_settings()
    for name, value in sorted(vars(settings).items()):
        print(f"CALLPASS_{name.upper()}={shown_setting(name, value)}")
    return 0


def _cmd_healthcheck(args: argparse.Namespace) -> int:
    from worker.ops.health import heartbeat_age_s, heartbeat_problem
    from worker.settings import load_settings

    path = load_settings().heartbeat_file
    if not path:
        print("callpass healthcheck: CALLPASS_HEARTBEAT_FILE is not set", file=sys.stderr)
        return 2
    age = heartbeat_age_s(path)
    problem = heartbeat_problem(path, age, args.max_age_s)
    if problem or age is None:
        print(f"callpass healthcheck: {problem}", file=sys.stderr)
        return 1
    print(f"ok: last heartbeat {age:.1f} s ago")
    return 0


def _cmd_readycheck(args: argparse.Namespace) -> int:
    from worker.ops.readiness import readiness_problems
    from worker.settings import load_settings

    problems = readiness_problems(load_settings(), args.max_age_s)
    for problem in problems:
        print(f"callpass readycheck: {problem}", file=sys.stderr)
    if not problems:
        print("ready")
    return 1 if problems else 0


def _cmd_webhooks(args: argparse.Namespace) -> int:
    if args.webhooks_command == "new-secret":
        from worker.webhooks.signature import generate_secret

        print(generate_secret())
        return 0
    from worker.masking import mask_text, redact_url
    from worker.process.wiring import records_redis, webhook_store
    from worker.settings import load_settings

    settings = load_settings()
    store = webhook_store(settings, records_redis(settings.redis_url))
    if args.webhooks_command == "dead":
        events = store.dead_events(args.limit)
        for event in events:
            # A request id is the producer's text: it may hold a number.
            request_id = mask_text(event.request_id)
            if args.json:
                shown = {**event.as_dict(), "url": redact_url(event.url), "request_id": request_id}
                print(json.dumps(shown))
            else:
                print(
                    f"{event.event_id}  {event.type:<14}  request {request_id}  "
                    f"{redact_url(event.url)}  {event.attempts} attempt(s)  {event.last_error}"
                )
        counts = store.counts()
        print(f"{counts['dead']} dead, {counts['pending']} pending", file=sys.stderr)
        return 0
    if not args.all and not args.event_ids:
        print("callpass webhooks replay: name EVENT_IDs or pass --all", file=sys.stderr)
        return 2
    ids = [e.event_id for e in store.dead_events(1_000_000)] if args.all else args.event_ids
    replayed = [event_id for event_id in ids if store.replay(event_id)]
    for event_id in sorted(set(ids) - set(replayed)):
        print(
            f"{event_id}: not a dead event (unknown, expired or already replayed)", file=sys.stderr
        )
    # Replayed events are due now: a running worker's mover sends them within a second.
    print(f"replayed {len(replayed)} event(s)")
    return 0 if len(replayed) == len(ids) else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:
        from simulator.__main__ import main as simulator_main

        return simulator_main(argv[1:])
    if argv[:1] == ["flower"]:
        from worker.flower.entry import run_flower

        return run_flower(argv[1:])
    args = _parser().parse_args(argv)
    from worker.settings import SettingsError

    try:
        if args.command == "call":
            return _cmd_call(args)
        if args.command == "result":
            return _cmd_result(args)
        if args.command == "config":
            return _cmd_config()
        if args.command == "webhooks":
            return _cmd_webhooks(args)
        if args.command == "healthcheck":
            return _cmd_healthcheck(args)
        if args.command == "readycheck":
            return _cmd_readycheck(args)
        from worker.dev.runner import run_stack

        return run_stack(
            Path(args.run_dir), args.exit_after_demo, args.demo_timeout, args.flower_port
        )
    except SettingsError as exc:
        print(f"callpass: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
