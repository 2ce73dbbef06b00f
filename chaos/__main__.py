"""``python -m chaos`` (``make chaos``): run the scenarios, print the table, fail on a loss."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from chaos.harness import HEADER, Row
from chaos.scenarios import SCENARIOS, Size, worker_killed


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--size", choices=["full", "small"], default="full")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs)")
    parser.add_argument(
        "--amqp-url",
        default="",
        help="also kill workers with this RabbitMQ as the broker (e.g. "
        "amqp://guest:guest@127.0.0.1:5672//)",
    )
    args = parser.parse_args()
    size = Size.get(args.size)
    rows: list[Row] = []
    began = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="callpass-chaos-"))
    for name in args.only or list(SCENARIOS):
        print(f"== {name} ...", flush=True)
        row = SCENARIOS[name](base / name, size)
        rows.append(row)
        print(row.render(), flush=True)
        for problem in row.problems:
            print(f"   problem: {problem}", flush=True)
    if args.amqp_url:
        print("== worker-killed on RabbitMQ ...", flush=True)
        rows.append(worker_killed(base / "worker-killed-rabbitmq", size, args.amqp_url))
        print(rows[-1].render(), flush=True)
        for problem in rows[-1].problems:
            print(f"   problem: {problem}", flush=True)
    print(f"\n{HEADER}")
    for row in rows:
        print(row.render())
    print(f"\nchaos ({args.size}): {time.monotonic() - began:.0f} s; logs in {base}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
