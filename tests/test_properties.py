"""Whatever a foreign producer sends, bad input settles `invalid` and places no call.

Hypothesis throws arbitrary ``callpass.start_call`` payloads at the real worker: wrong types,
huge strings, look-alike digits, bad time-outs, missing and unknown fields, positional
arguments. The test's own reading of the contract (:func:`judge`, independent of
``worker.validation``) decides which fields are wrong; every payload sent has at least one, so
no call may be placed, and each settles with one schema-valid ``invalid`` document naming one of
the wrong fields.

Each Hypothesis example is a batch of :data:`BATCH` payloads sent at once and then awaited, so
``CALLPASS_PROPERTY_EXAMPLES`` payloads (default 2000) take a few dozen round trips.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from celery import Celery
from celery.result import AsyncResult
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Simulator
from worker.devstack import Proc

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
OUTCOME_SCHEMA = json.loads((SCHEMAS / "outcome.v1.json").read_text())

#: Payloads per Hypothesis example: sent together, then awaited together.
BATCH = 50
#: Payloads to try in all.
REQUESTED = int(os.environ.get("CALLPASS_PROPERTY_EXAMPLES", "200"))
#: Seconds one batch may take to settle completely.
SETTLE_TIMEOUT_S = 60.0

# --------------------------------------------------------------------------------------------
# The oracle: the contract as the README states it, written without the worker's code.
# --------------------------------------------------------------------------------------------

KNOWN_FIELDS = ("dn", "timeout", "webhook_url", "request_id")
ASCII_DIGITS = frozenset(string.digits)
REQUEST_ID_CHARS = frozenset(string.ascii_letters + string.digits + "._:-")
WEBHOOK_URL_MAX_LEN = 2048
#: An unknown argument with a long name may be named by the start of its name.
NAME_SHOWN_CHARS = 64

# URL reading (WHATWG): leading C0 controls and spaces are dropped, tabs and newlines removed.
_URL_LEADING_JUNK = "".join(chr(c) for c in range(0x21))
_HTTP_SCHEME = re.compile(r"https?://", re.ASCII | re.IGNORECASE)
# A host (and port) and a rest every URL reader agrees on: plain ASCII names, no spaces.
_PLAIN_HOST = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]{1,5})?", re.ASCII)
_IPV6_HOST = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::[0-9]{1,5})?", re.ASCII)
_PLAIN_REST = re.compile(r"[!-~]*", re.ASCII)


def dn_ok(value: object) -> bool:
    """``7`` then 10 to 14 ASCII digits."""
    return (
        isinstance(value, str)
        and 11 <= len(value) <= 15
        and value[0] == "7"
        and set(value) <= ASCII_DIGITS
    )


def timeout_ok(value: object) -> bool:
    """Absent/null, or a whole number (a JSON integer, not a boolean) from 2 to 99."""
    return value is None or (type(value) is int and 2 <= value <= 99)


def request_id_ok(value: object) -> bool:
    return value is None or (
        isinstance(value, str) and 1 <= len(value) <= 128 and set(value) <= REQUEST_ID_CHARS
    )


def webhook_url_verdict(value: object) -> str:
    """``ok``, ``wrong``, or ``unsure`` for URLs whose reading depends on the URL parser.

    Certainly wrong: not a string, too long, no http(s) scheme, no host, or brackets that are
    not an IPv6 literal. Certainly right: an http(s) URL with a plain ASCII host and no spaces.
    Anything in between (a non-ASCII host, a port that is not a number, ...) is left open.
    """
    if value is None:
        return "ok"
    if not isinstance(value, str) or len(value) > WEBHOOK_URL_MAX_LEN:
        return "wrong"
    text = value.lstrip(_URL_LEADING_JUNK)
    for blank in "\t\r\n":
        text = text.replace(blank, "")
    scheme = _HTTP_SCHEME.match(text)
    if scheme is None:
        return "wrong"
    rest = text[scheme.end() :]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    host_port = authority.rpartition("@")[2]
    if host_port == "" or host_port.startswith(":"):
        return "wrong"
    if "[" in authority or "]" in authority:
        literal = _IPV6_HOST.fullmatch(host_port)
        if literal is None or "[" in authority[: -len(host_port)]:
            return "wrong"
        try:
            ipaddress.IPv6Address(literal.group(1))
        except ValueError:
            return "wrong"
        return "ok" if _PLAIN_REST.fullmatch(rest) else "unsure"
    if _PLAIN_HOST.fullmatch(host_port) and _PLAIN_REST.fullmatch(rest):
        return "ok"
    return "unsure"


@dataclass(frozen=True)
class Verdict:
    """What the oracle makes of one payload."""

    wrong: frozenset[str]  # fields that certainly break the contract
    unsure: frozenset[str]  # fields whose reading the contract leaves to the URL parser


def judge(args: list[Any], kwargs: dict[str, Any]) -> Verdict:
    wrong: set[str] = set()
    unsure: set[str] = set()
    if args:
        wrong.add("args")
    for name in kwargs:
        if name not in KNOWN_FIELDS:
            wrong.update((name, name[:NAME_SHOWN_CHARS]))
    if not dn_ok(kwargs.get("dn")):
        wrong.add("dn")
    if not timeout_ok(kwargs.get("timeout")):
        wrong.add("timeout")
    webhook = webhook_url_verdict(kwargs.get("webhook_url"))
    if webhook == "wrong":
        wrong.add("webhook_url")
    elif webhook == "unsure":
        unsure.add("webhook_url")
    if not request_id_ok(kwargs.get("request_id")):
        wrong.add("request_id")
    return Verdict(frozenset(wrong), frozenset(unsure))


def is_valid(args: list[Any], kwargs: dict[str, Any]) -> bool:
    """True when the oracle cannot name a field that breaks the contract."""
    return not judge(args, kwargs).wrong


# --------------------------------------------------------------------------------------------
# Strategies: what a foreign producer might put in a message (all of it JSON).
# --------------------------------------------------------------------------------------------

#: Digits and near-digits: Arabic-Indic, Persian, fullwidth, Devanagari, superscripts, NKo.
LOOKALIKE_DIGITS = string.digits + "".join(
    chr(c)
    for c in (
        *range(0x0660, 0x066A),  # Arabic-Indic
        *range(0x06F0, 0x06FA),  # Extended Arabic-Indic (Persian)
        *range(0x0966, 0x0970),  # Devanagari
        *range(0xFF10, 0xFF1A),  # fullwidth
        *range(0x1D7CE, 0x1D7D8),  # mathematical bold
        0x00B2,  # superscript two
        0x00B3,  # superscript three
        0x00B9,  # superscript one
        0x07C0,  # NKo zero
    )
)
PHONE_PUNCTUATION = "+ -().\t\n\u00a0/#*"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
non_string_values = json_values.filter(lambda v: not isinstance(v, str))


def repeated(
    alphabet: st.SearchStrategy[str], min_len: int, max_len: int
) -> st.SearchStrategy[str]:
    """Long strings built from a short drawn unit, so 100 KB costs Hypothesis a few bytes."""
    return st.tuples(
        st.text(alphabet=alphabet, min_size=1, max_size=6), st.integers(min_len, max_len)
    ).map(lambda t: (t[0] * (t[1] // len(t[0]) + 1))[: t[1]])


any_text = st.text(max_size=40)
huge_text = repeated(st.characters(exclude_categories=("Cs",)), 2049, 100_000)
digitish = st.text(alphabet=LOOKALIKE_DIGITS + PHONE_PUNCTUATION, min_size=1, max_size=20)

valid_dn = st.integers(10, 14).flatmap(
    lambda n: st.text(alphabet=string.digits, min_size=n, max_size=n).map(lambda d: "7" + d)
)
bad_dn = st.one_of(
    non_string_values,
    st.integers(70_000_000_000, 799_999_999_999_999),  # the right digits as a JSON number
    valid_dn.map(lambda d: "+" + d),
    valid_dn.map(lambda d: d[:4] + " " + d[4:]),
    valid_dn.map(lambda d: d + "\n"),
    valid_dn.map(lambda d: "8" + d[1:]),
    valid_dn.map(lambda d: d.replace("9", "\u0669").replace("1", "\u0661") + "\u0669"),
    st.text(alphabet=string.digits, max_size=30).map(lambda d: "7" + d),  # too short or long
    st.text(alphabet=LOOKALIKE_DIGITS, min_size=10, max_size=14).map(lambda d: "7" + d),
    digitish,
    any_text,
    repeated(st.sampled_from(string.digits), 16, 100_000).map(lambda d: "7" + d),
    huge_text,
).filter(lambda v: not dn_ok(v))

valid_timeout = st.none() | st.integers(2, 99)
bad_timeout = st.one_of(
    st.booleans(),
    st.integers(max_value=1),
    st.integers(min_value=100),
    st.integers(2, 99).map(float),  # 5.0 is not a whole-number JSON integer
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(2, 99).map(str),
    st.sampled_from(["٩", "10s", "", " 5", "+5"]),
    non_string_values,
    any_text,
).filter(lambda v: not timeout_ok(v))

valid_webhook = st.sampled_from(
    ["https://hooks.example.com/callpass", "http://127.0.0.1:8080/cb?x=1", "https://a.b/"]
)
bad_webhook = st.one_of(
    non_string_values,
    st.sampled_from(
        [
            "",
            "http://",
            "https://",
            "http:///path",
            "https://@:443/",
            "https:example.com",
            "ftp://example.com/",
            "javascript:alert(1)",
            "mailto:ops@example.com",
            "//example.com/cb",
            "example.com/cb",
            "http://[",
            "http://[::1",
            "http://]/",
            "https://[not-ipv6]/",
            "http://a[b]c/",
        ]
    ),
    any_text.map(lambda t: "x" + t),
    any_text.map(lambda t: "http://[" + t),
    repeated(st.sampled_from(string.ascii_lowercase + "/"), WEBHOOK_URL_MAX_LEN, 100_000).map(
        lambda t: "https://example.com/" + t
    ),
).filter(lambda v: webhook_url_verdict(v) == "wrong")
odd_webhook = st.one_of(any_text, any_text.map(lambda t: "https://" + t))

valid_request_id = st.text(alphabet="".join(sorted(REQUEST_ID_CHARS)), min_size=1, max_size=128)
bad_request_id = st.one_of(
    non_string_values,
    st.just(""),
    st.text(alphabet="".join(sorted(REQUEST_ID_CHARS)), min_size=129, max_size=200),
    st.text(min_size=1, max_size=128),
    repeated(st.sampled_from("ab"), 129, 100_000),
).filter(lambda v: not request_id_ok(v))

unknown_names = st.one_of(
    st.sampled_from(
        ["self", "args", "kwargs", "DN", "dn ", "phone", "number", "task_id", "callback", ""]
    ),
    st.text(max_size=80),
).filter(lambda name: name not in KNOWN_FIELDS)
unknown_kwargs = st.dictionaries(unknown_names, json_values, min_size=1, max_size=3)

positional_args = st.one_of(
    st.tuples(valid_dn, st.integers(2, 99)).map(list),
    valid_dn.map(lambda d: [d]),
    st.lists(json_values, min_size=1, max_size=4),
)

#: Each payload breaks the contract in this way at least; the rest is drawn freely.
DEFECTS = ("args", "unknown", "dn_missing", "dn", "timeout", "webhook_url", "request_id")


_ABSENT = object()


@dataclass(frozen=True)
class Payload:
    args: list[Any]
    kwargs: dict[str, Any]

    def __repr__(self) -> str:
        return f"Payload(args={short(self.args)}, kwargs={short(self.kwargs)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's reports
        printer.text(repr(self))


@st.composite
def payloads(draw: st.DrawFn) -> Payload:
    forced = draw(st.sampled_from(DEFECTS))

    def field(name: str, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        mode = "bad" if forced == name else draw(st.sampled_from(["absent", "good", "good", "bad"]))
        return draw(bad) if mode == "bad" else (draw(good) if mode == "good" else _ABSENT)

    kwargs: dict[str, Any] = {}
    dn = _ABSENT if forced == "dn_missing" else field("dn", valid_dn, bad_dn)
    values = {
        "dn": dn,
        "timeout": field("timeout", valid_timeout, bad_timeout),
        "webhook_url": field("webhook_url", valid_webhook | st.none() | odd_webhook, bad_webhook),
        "request_id": field("request_id", valid_request_id | st.none(), bad_request_id),
    }
    for name in draw(st.permutations(KNOWN_FIELDS)):
        if values[name] is not _ABSENT:
            kwargs[name] = values[name]
    if forced == "unknown" or draw(st.integers(0, 5)) == 0:
        kwargs.update(draw(unknown_kwargs))
    args: list[Any] = (
        draw(positional_args) if forced == "args" or draw(st.integers(0, 5)) == 0 else []
    )
    return Payload(args, kwargs)


#: Hand-picked payloads that run first, every time.
KNOWN_TRICKY = [
    Payload([], {"dn": "7٩٩٩1234567", "timeout": 5}),
    Payload([], {"dn": "+79991234567", "timeout": 5}),
    Payload([], {"dn": "7999 123 45 67"}),
    Payload([], {"dn": "79991234567\n", "timeout": 5}),
    Payload([], {"dn": 79991234567, "timeout": 5}),
    Payload([], {"dn": "79991234567", "timeout": True}),
    Payload([], {"dn": "79991234567", "timeout": 5.0}),
    Payload([], {"dn": "79991234567", "timeout": -5}),
    Payload([], {"dn": "7" * 100_000}),
    Payload([], {"timeout": 5}),
    Payload([], {}),
    Payload(["79991234567", 5], {}),
    Payload([{"dn": "79991234567"}], {}),
    Payload([], {"dn": "79991234567", "webhook_url": "http://[::1"}),
    Payload([], {"dn": "79991234567", "request_id": ""}),
    Payload([], {"dn": "79991234567", "request_id": "٩" * 200}),
    Payload([], {"dn": "79991234567", "colour": "red"}),
    Payload([], {"dn": "79991234567", "x" * 300: None}),
]

# --------------------------------------------------------------------------------------------
# The property.
# --------------------------------------------------------------------------------------------


def short(value: object, limit: int = 300) -> str:
    """A repr that names a huge payload without printing all of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def misbehaviour(payload: Payload, verdict: Verdict, result: AsyncResult) -> str | None:
    """Why ``result`` is not the one `invalid` document ``payload`` calls for (None: it is)."""
    try:
        outcome = result.get(timeout=SETTLE_TIMEOUT_S, propagate=False)
    except TimeoutError:
        return f"{payload!r}: not settled within {SETTLE_TIMEOUT_S:g} s (state {result.state})"
    if result.state != "SUCCESS":
        return f"{payload!r}: task ended {result.state}, not invalid\n{result.traceback}"
    try:
        jsonschema.validate(outcome, OUTCOME_SCHEMA)
    except jsonschema.ValidationError as exc:
        return f"{payload!r}: {short(outcome)} breaks the schema: {exc.message}"
    error = outcome["error"]
    raw_id = payload.kwargs.get("request_id")
    expected_ids = [raw_id] if request_id_ok(raw_id) and raw_id else [result.id, raw_id]
    broken = [
        what
        for what, holds in (
            ("outcome is invalid", outcome["outcome"] == "invalid"),
            ("call_placed is false", outcome["call_placed"] is False),
            ("no callid, no pin", outcome["callid"] is None and outcome["pin"] is None),
            ("error has field and rule", isinstance(error, dict)),
            (
                f"error names one of {sorted(verdict.wrong | verdict.unsure)}",
                isinstance(error, dict) and error["field"] in verdict.wrong | verdict.unsure,
            ),
            ("the rule is stated", isinstance(error, dict) and bool(error["rule"].strip())),
            ("request_id is the producer's or the task id", outcome["request_id"] in expected_ids),
        )
        if not holds
    ]
    return f"{payload!r} → {short(outcome)}: not {', '.join(broken)}" if broken else None


def test_arbitrary_bad_payloads_settle_invalid_without_a_call(
    app: Celery, sim: Simulator, worker: Proc, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every payload that breaks the contract settles with one `invalid` document naming a
    wrong field; the API sees no start and the worker keeps running."""
    tried = 0

    @settings(
        max_examples=max(1, math.ceil(REQUESTED / BATCH)),
        deadline=None,
        derandomize=True,
        database=None,
        # Each example is a real round trip: the failure message names the exact payload, so
        # shrinking (hundreds of round trips) would only cost time.
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
    @given(st.lists(payloads(), min_size=BATCH, max_size=BATCH))
    @example(KNOWN_TRICKY)
    def property_holds(batch: list[Payload]) -> None:
        nonlocal tried
        verdicts = [judge(p.args, p.kwargs) for p in batch]
        assume(all(not is_valid(p.args, p.kwargs) for p in batch))
        starts_before = sim.stats()["starts"]
        results = [
            app.send_task("callpass.start_call", args=p.args, kwargs=p.kwargs, queue="callpass")
            for p in batch
        ]
        tried += len(batch)
        problems = [
            problem
            for payload, verdict, result in zip(batch, verdicts, results, strict=True)
            if (problem := misbehaviour(payload, verdict, result)) is not None
        ]
        if problems:
            pytest.fail(f"{len(problems)} of {len(batch)} payloads:\n" + "\n".join(problems))
        stats = sim.stats()
        assert stats["starts"] == starts_before
        ids = {r.id for r in results} | {
            p.kwargs["request_id"] for p in batch if isinstance(p.kwargs.get("request_id"), str)
        }
        assert not ids & set(stats["starts_by_request"])
        assert worker.alive(), worker.log_tail()

    property_holds()

    line = f"property payloads tried: {tried}"
    with capsys.disabled():
        print(f"\n{line}")
    report = os.environ.get("CALLPASS_PROPERTY_REPORT")
    if report:
        Path(report).write_text(line + "\n")
    assert tried >= REQUESTED
