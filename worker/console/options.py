"""The options of ``callpass call``, apart from what runs it: building the parser imports
nothing heavy, so ``callpass healthcheck`` (a probe) stays quick."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_call_options"]


def add_call_options(call: argparse.ArgumentParser) -> None:
    call.add_argument("dn", nargs="?", help="destination number, 7XXXXXXXXXX")
    call.add_argument(
        "--file", type=Path, default=None, metavar="PATH", help="a batch: one number per line"
    )
    call.add_argument("--timeout", type=int, default=None, help="seconds the call may ring (2-99)")
    call.add_argument("--request-id", default=None, help="your idempotency key (one number only)")
    call.add_argument(
        "--verification-id", default=None, help="the verification the call belongs to (version 2)"
    )
    call.add_argument(
        "--resend", action="store_true", help="another call in --verification-id (version 2)"
    )
    call.add_argument("--wait", action="store_true", help="follow the calls to their outcome")
    call.add_argument("--wait-timeout", type=float, default=180.0, metavar="SECONDS")
    call.add_argument("--json", action="store_true", help="JSON on stdout, for scripts")
