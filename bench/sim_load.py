"""How many requests per second the simulator sustains on loopback (it must not be a bottleneck).

Starts its own simulator process, then drives it with a bounded number of keep-alive
connections from this process: half async starts, half status requests. Stops after
``--requests`` requests or ``--seconds``, whichever comes first.

    python -m bench.sim_load --requests 20000 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from worker.dev.stack import Stack
from worker.settings import SIMULATOR_DEV_TOKEN

HEADERS = {
    "Authorization": f"Bearer {SIMULATOR_DEV_TOKEN}",
    "Content-Type": "application/x-www-form-urlencoded",
}


async def drive(url: str, total: int, connections: int, seconds: float) -> tuple[int, int, float]:
    done = errors = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
        start = await session.post(
            url + "api/v2.0/start-call-password/", data="dn=79990009003&timeout=99&async=1"
        )
        callid = (await start.json())["data"]["callid"]

        async def one_worker(n: int) -> None:
            nonlocal done, errors
            i = n
            while done + errors < total and time.monotonic() < deadline:
                if i % 2:
                    path, body = "api/v2.0/get-call-password-status/", f"callid={callid}"
                else:
                    path, body = "api/v2.0/start-call-password/", "dn=79161234567&timeout=5&async=1"
                async with session.post(url + path, data=body) as response:
                    await response.read()
                    if response.status == 200:
                        done += 1
                    else:
                        errors += 1
                i += 1

        began = time.monotonic()
        await asyncio.gather(*(one_worker(n) for n in range(connections)))
        return done, errors, time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            _, url = stack.start_simulator("--callid-ttl", "60")
            done, errors, elapsed = asyncio.run(
                drive(url, args.requests, args.connections, args.seconds)
            )
        finally:
            stack.stop_all()
    print(
        f"simulator: {done} requests ({errors} errors) in {elapsed:.2f} s "
        f"= {done / elapsed:,.0f} requests/s over {args.connections} connections"
    )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
