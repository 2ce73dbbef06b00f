"""The simulator's HTTP surface (aiohttp): the API's routes plus ``/_sim/*`` for tests.

Checks run in the order a real front end would: route (404), method (405), token (401/403),
Content-Type (415), Content-Length (411/400), parameters (400); then injected faults; then the
method itself. Every answer is the contract's JSON envelope.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from simulator.calls import STANDARD_MIX, CallBook, MixEntry
from simulator.faults import Fault, FaultConfig, FaultPicker

__all__ = ["SimulatorConfig", "build_app"]

_TOKEN_RE = re.compile(r"[0-9a-f]{32}|[0-9a-f]{64}")
_DN_RE = re.compile(r"7[0-9]{10,14}", re.ASCII)
_TIMEOUT_RE = re.compile(r"[0-9]{1,2}", re.ASCII)
FORM = "application/x-www-form-urlencoded"
Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]

BOOK_KEY = web.AppKey("book", CallBook)
#: Hooks the serving loop installs (``outage``: stop listening for N seconds).
CONTROL_KEY = web.AppKey("control", dict)
PICKER_KEY = web.AppKey("picker", FaultPicker)
TOKENS_KEY = web.AppKey("tokens", frozenset)


@dataclass
class SimulatorConfig:
    tokens: frozenset[str]
    mix: tuple[MixEntry, ...] = STANDARD_MIX
    deny_prefixes: tuple[str, ...] = ()
    callid_ttl_s: float = 3600.0
    seed: int | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)


def envelope(status: str, data: dict[str, Any], http_status: int = 200) -> web.Response:
    body = json.dumps({"data": data, "status": status}, separators=(",", ":"))
    return web.Response(text=body, status=http_status, content_type="application/json")


def error(http_status: int, message: str, **headers: str) -> web.Response:
    response = envelope("error", {"message": message}, http_status)
    response.headers.update(headers)
    return response


def method_error(message: str) -> web.Response:
    return envelope("success", {"message": message, "result": "error"})


async def _read_form(request: web.Request) -> dict[str, str] | web.Response:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme != "Bearer" or not _TOKEN_RE.fullmatch(token):
        return error(401, "missing or malformed token")
    if token not in request.app[TOKENS_KEY]:
        return error(403, "unknown token")
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != FORM:
        return error(415, f"Content-Type must be {FORM}")
    declared = request.headers.get("Content-Length")
    if declared is None:
        return error(411, "Content-Length required")
    body = await request.read()
    if not declared.isdigit() or int(declared) != len(body):
        return error(400, "Content-Length does not match the body")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError):
        return error(400, "body is not UTF-8 form data")
    return dict(pairs)


def _check_start(params: dict[str, str], version: str) -> str | None:
    for name in ("dn", "timeout") + (("async",) if version == "v2.0" else ()):
        if name not in params:
            return f"missing parameter: {name}"
    if not _DN_RE.fullmatch(params["dn"]):
        return "invalid parameter: dn"
    t = params["timeout"]
    if not _TIMEOUT_RE.fullmatch(t) or not 2 <= int(t) <= 99:
        return "invalid parameter: timeout"
    if version == "v2.0" and params["async"] not in ("0", "1"):
        return "invalid parameter: async"
    return None


def _start_handler(version: str) -> Handler:
    async def start(request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        problem = _check_start(params, version)
        if problem:
            return error(400, problem)
        book = request.app[BOOK_KEY]
        dn, timeout = params["dn"], int(params["timeout"])
        request_id = request.headers.get("X-Request-Id")
        book.count_start(dn, request_id)
        if book.denied(dn):
            return method_error("destination not allowed")
        call = book.place(dn, timeout, request_id)
        if version == "v2.0" and params["async"] == "1":
            return envelope("success", {"callid": call.callid, "pin": call.pin, "result": "null"})
        # Synchronous: answer once the outcome is known, at most `timeout` seconds.
        await asyncio.sleep(max(0.0, call.ends_at - time.time()))
        return envelope(
            "success", {"callid": call.callid, "pin": call.pin, "result": call.status(time.time())}
        )

    return start


async def _status(request: web.Request, params: dict[str, str]) -> web.StreamResponse:
    # Third-party clients were seen sending "callId"; the contract says "callid".
    callid = params.get("callid", params.get("callId"))
    if not callid:
        return error(400, "missing parameter: callid")
    book = request.app[BOOK_KEY]
    book.status_by_callid[callid] += 1
    call = book.find(callid)
    if call is None:
        return method_error("can't find callid")
    return envelope("success", {"callid": call.callid, "result": call.status(time.time())})


ROUTES: dict[str, tuple[str, Handler]] = {
    "/api/v1.0/start-call-password/": ("start_v1", _start_handler("v1.0")),
    "/api/v2.0/start-call-password/": ("start_v2", _start_handler("v2.0")),
    "/api/v2.0/get-call-password-status/": ("status", _status),
    "/api/v2.0/get-call-password-status": ("status", _status),
}


async def api(request: web.Request) -> web.StreamResponse:
    route = ROUTES.get(request.path)
    if route is None:
        return error(404, "unknown method")
    if request.method != "POST":
        return error(405, "only POST is accepted", Allow="POST")
    name, handler = route
    parsed = await _read_form(request)
    if isinstance(parsed, web.Response):
        return parsed
    picker = request.app[PICKER_KEY]
    book = request.app[BOOK_KEY]
    book.requests_by_method[name] += 1
    book.arrivals.append((time.time(), name))
    delay = picker.latency_s()
    if delay:
        await asyncio.sleep(delay)
    fault = picker.pick()
    if fault is Fault.UNAVAILABLE:
        return error(503, "service unavailable")
    if fault is Fault.RATE_LIMITED:
        return error(429, "too many requests", **{"Retry-After": str(picker.config.retry_after_s)})
    if fault is Fault.DROP_BEFORE:
        return _drop(request)
    response = await handler(request, parsed)
    if fault is Fault.SERVER_ERROR:
        return error(500, "internal server error")
    if fault is Fault.MALFORMED:
        return web.Response(
            text='{"status":"success","data":{"callid"', content_type="application/json"
        )
    if fault is Fault.DROP_AFTER:
        return _drop(request)
    return response


def _drop(request: web.Request) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.abort()  # a reset, as a crashed front end or a broken path gives
    return web.Response(status=500)  # never written: the connection is gone


async def sim_stats(request: web.Request) -> web.Response:
    book = request.app[BOOK_KEY]
    return web.json_response({**book.stats(), "faults": request.app[PICKER_KEY].config.as_dict()})


async def sim_calls(request: web.Request) -> web.Response:
    return web.json_response([c.as_dict() for c in request.app[BOOK_KEY].calls.values()])


async def sim_arrivals(request: web.Request) -> web.Response:
    """Arrival times of the API requests, of one method with ``?method=``."""
    method = request.query.get("method")
    arrivals = request.app[BOOK_KEY].arrivals
    return web.json_response([at for at, name in arrivals if method in (None, name)])


async def sim_reset(request: web.Request) -> web.Response:
    request.app[BOOK_KEY].reset()
    return web.json_response({"reset": True})


async def sim_faults(request: web.Request) -> web.Response:
    try:
        values = await request.json()
        if not isinstance(values, dict):
            raise ValueError("body must be a JSON object")
        request.app[PICKER_KEY].config.update(values)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(request.app[PICKER_KEY].config.as_dict())


async def sim_outage(request: web.Request) -> web.Response:
    """Stop listening for ``seconds`` (connections are refused), then come back, state intact."""
    try:
        body = await request.json()
        seconds = float(body["seconds"])
        if not 0 < seconds <= 3600:
            raise ValueError("seconds must be in (0, 3600]")
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f'body must be {{"seconds": N}}: {exc}'}, status=400)
    outage = request.app[CONTROL_KEY].get("outage")
    if outage is None:
        return web.json_response({"error": "outage needs the simulator's own server"}, status=501)
    # Start after this answer has gone out: the outage closes this connection too.
    tasks = request.app[CONTROL_KEY].setdefault("tasks", set())
    task = asyncio.get_running_loop().create_task(outage(seconds, delay=0.05))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return web.json_response({"outage_s": seconds})


async def _pruner(app: web.Application) -> Any:
    async def loop() -> None:
        while True:
            await asyncio.sleep(60)
            app[BOOK_KEY].prune()

    task = asyncio.create_task(loop())
    yield
    task.cancel()


def build_app(config: SimulatorConfig) -> web.Application:
    app = web.Application()
    app[TOKENS_KEY] = config.tokens
    app[BOOK_KEY] = CallBook(
        mix=config.mix,
        deny_prefixes=config.deny_prefixes,
        callid_ttl_s=config.callid_ttl_s,
        seed=config.seed,
    )
    app[PICKER_KEY] = FaultPicker(config.faults, seed=config.seed)
    app[CONTROL_KEY] = {}
    app.router.add_get("/_sim/stats", sim_stats)
    app.router.add_get("/_sim/calls", sim_calls)
    app.router.add_get("/_sim/arrivals", sim_arrivals)
    app.router.add_post("/_sim/reset", sim_reset)
    app.router.add_post("/_sim/faults", sim_faults)
    app.router.add_post("/_sim/outage", sim_outage)
    app.router.add_route("*", "/{tail:.*}", api)
    app.cleanup_ctx.append(_pruner)
    return app
