"""``python -m simulator`` / ``callpass simulator``: run the API simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import sys
from collections.abc import Sequence

from aiohttp import web

from simulator.calls import STANDARD_MIX, parse_mix
from simulator.faults import FaultConfig
from simulator.server import CONTROL_KEY, SimulatorConfig, build_app
from worker.settings import SIMULATOR_DEV_TOKEN as DEV_TOKEN

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="callpass simulator",
        description="Simulator of the CallPassword API (loopback by default).",
    )
    p.add_argument("--host", default=env("CALLPASS_SIM_HOST", "127.0.0.1"))
    p.add_argument(
        "--port",
        type=int,
        default=int(env("CALLPASS_SIM_PORT", "8099")),
        help="0 picks a free port (see --ready-file)",
    )
    p.add_argument(
        "--token",
        action="append",
        dest="tokens",
        help="accepted Bearer token (repeatable); default: the development token "
        "and CALLPASS_SIM_TOKENS (comma-separated)",
    )
    p.add_argument(
        "--mix",
        default=env("CALLPASS_SIM_MIX", ""),
        help="outcome mix, e.g. NO_ANSWER@timeout:70,USER_BUSY@1-3:20,"
        "NORMAL_CLEARING@2-8:10 (the default)",
    )
    p.add_argument(
        "--deny",
        action="append",
        default=[],
        metavar="PREFIX",
        help="numbers with this prefix get 'destination not allowed' (repeatable)",
    )
    p.add_argument("--callid-ttl", type=float, default=3600.0, metavar="SECONDS")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--faults",
        default=env("CALLPASS_SIM_FAULTS", ""),
        help='JSON object of fault settings, e.g. {"latency_ms": 50, "server_error_rate": 0.05}',
    )
    p.add_argument("--latency-ms", type=float, default=None, help="added latency per API request")
    p.add_argument("--tls-cert", default=None, help="serve https with this certificate (PEM)")
    p.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    p.add_argument(
        "--ready-file",
        default=None,
        help="write the base URL here once listening (for scripts and tests)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    tokens = set(args.tokens or [DEV_TOKEN])
    tokens.update(t for t in os.environ.get("CALLPASS_SIM_TOKENS", "").split(",") if t)
    faults = FaultConfig()
    if args.faults:
        faults.update(json.loads(args.faults))
    if args.latency_ms is not None:
        faults.update({"latency_ms": args.latency_ms})
    return SimulatorConfig(
        tokens=frozenset(tokens),
        mix=parse_mix(args.mix) if args.mix else STANDARD_MIX,
        deny_prefixes=tuple(args.deny),
        callid_ttl_s=args.callid_ttl,
        seed=args.seed,
        faults=faults,
    )


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


async def serve(
    config: SimulatorConfig,
    host: str,
    port: int,
    ready_file: str | None,
    tls: ssl.SSLContext | None = None,
) -> None:
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    sock = _listen(host, port)
    site = web.SockSite(runner, sock, backlog=1024, ssl_context=tls)
    await site.start()
    bound = sock.getsockname()[1]

    async def outage(seconds: float, delay: float = 0.0) -> None:
        nonlocal site
        await asyncio.sleep(delay)
        print(f"simulator: outage for {seconds:g} s", flush=True)
        await site.stop()  # new connections are refused ...
        if runner.server is not None:
            await runner.server.shutdown(0.1)  # ... and open ones are closed
        await asyncio.sleep(seconds)
        site = web.SockSite(runner, _listen(host, bound), backlog=1024, ssl_context=tls)
        await site.start()
        print("simulator: back", flush=True)

    app[CONTROL_KEY]["outage"] = outage
    url = f"{'https' if tls else 'http'}://{host}:{bound}/"
    print(f"simulator listening on {url}", flush=True)
    if ready_file:
        tmp = ready_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(url)
        os.replace(tmp, ready_file)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"callpass simulator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, args.host, args.port, args.ready_file, _tls(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
