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
import time
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
from worker.dev.stack import Proc

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
OUTCOME_SCHEMA = json.loads((SCHEMAS / "outcome.v1.json").read_text())
# Built once: jsonschema.validate() checks the schema itself on every call (~40 ms).
_OUTCOME_VALIDATOR_CLASS = jsonschema.validators.validator_for(OUTCOME_SCHEMA)
_OUTCOME_VALIDATOR_CLASS.check_schema(OUTCOME_SCHEMA)
OUTCOME_VALIDATOR = _OUTCOME_VALIDATOR_CLASS(OUTCOME_SCHEMA)

#: Payloads per Hypothesis example: sent together, then awaited together.
BATCH = 50
#: Payloads to try in all.
REQUESTED = int(os.environ.get("CALLPASS_PROPERTY_EXAMPLES", "2000"))
#: Seconds a whole batch may take to settle.
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


@dataclass(frozen=True)
class Payload:
    """The positional and keyword arguments of one ``callpass.start_call`` message."""

    args: list[Any]
    kwargs: dict[str, Any]

    def __repr__(self) -> str:
        return f"Payload(args={short(self.args)}, kwargs={short(self.kwargs)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's reports
        printer.text(repr(self))


def short(value: object, limit: int = 300) -> str:
    """A repr that names a huge payload without printing all of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


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


def nested(depth: int) -> list[Any]:
    """``[[[...]]]``: deep, but within what a Python producer's JSON encoder accepts."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


short_text = st.text(max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | short_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=4,
)
#: Anything JSON but a string or null, by construction (no filter to fail).
non_string_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(json_values, max_size=3),
    st.dictionaries(short_text, json_values, max_size=3),
    st.integers(1, 800).map(nested),
)
non_string_or_null = st.none() | non_string_values


def repeated(
    alphabet: st.SearchStrategy[str], min_len: int, max_len: int
) -> st.SearchStrategy[str]:
    """Long strings built from a short drawn unit, so 100 KB costs Hypothesis a few bytes."""
    return st.tuples(
        st.text(alphabet=alphabet, min_size=1, max_size=4), st.integers(min_len, max_len)
    ).map(lambda t: (t[0] * (t[1] // len(t[0]) + 1))[: t[1]])


huge_text = repeated(st.characters(codec="utf-8"), 2049, 100_000)
digitish = st.text(alphabet=LOOKALIKE_DIGITS + PHONE_PUNCTUATION, min_size=1, max_size=16)


def digits(min_len: int, max_len: int) -> st.SearchStrategy[str]:
    """ASCII digit strings, drawn as one integer and a length (cheap for Hypothesis)."""
    return st.integers(min_len, max_len).flatmap(
        lambda n: st.integers(0, 10**n - 1).map(lambda v: f"{v:0{n}d}")
    )


valid_dn = digits(10, 14).map(lambda d: "7" + d)
bad_dn = st.one_of(
    non_string_or_null,
    st.integers(70_000_000_000, 799_999_999_999_999),  # the right digits as a JSON number
    valid_dn.map(lambda d: "+" + d),
    valid_dn.map(lambda d: d[:4] + " " + d[4:]),
    valid_dn.map(lambda d: d + "\n"),
    valid_dn.map(lambda d: "8" + d[1:]),
    valid_dn.map(lambda d: d[:5] + "\u0669" + d[6:]),  # one Arabic-Indic nine
    st.one_of(digits(0, 9), digits(15, 40)).map(lambda d: "7" + d),  # too short, too long
    st.text(alphabet=LOOKALIKE_DIGITS[10:], min_size=1, max_size=4).map(
        lambda d: ("7999" + d + "1234567")[:15]
    ),
    digitish,
    short_text,
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
    st.sampled_from(["\u0669", "10s", "", " 5", "+5", "5 "]),
    non_string_values,
    short_text,
    huge_text,
).filter(lambda v: not timeout_ok(v))

valid_webhook = st.sampled_from(
    ["https://hooks.example.com/callpass", "http://127.0.0.1:8080/cb?x=1", "https://a.b/"]
)
#: Strings whose reading as a URL the oracle leaves open (see webhook_url_verdict).
odd_webhook = st.one_of(
    short_text,
    short_text.map(lambda t: "https://" + t),
    st.sampled_from(
        [
            "https://пример.рф/cb",
            "https://ex\uff03ample.com/",  # fullwidth '#': NFKC turns the host into a fragment
            "https://a\u2100b/",  # '℀' is 'a/c' under NFKC
            "http://host:port/",
            "https://exa mple.com/",
        ]
    ),
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
    short_text.map(lambda t: "x" + t),
    short_text.map(lambda t: "http://[" + t),
    repeated(st.sampled_from(string.ascii_lowercase + "/"), WEBHOOK_URL_MAX_LEN, 100_000).map(
        lambda t: "https://example.com/" + t
    ),
).filter(lambda v: webhook_url_verdict(v) == "wrong")

REQUEST_ID_ALPHABET = "".join(sorted(REQUEST_ID_CHARS))
valid_request_id = st.one_of(
    st.text(alphabet=REQUEST_ID_ALPHABET, min_size=1, max_size=16),
    repeated(st.sampled_from(REQUEST_ID_ALPHABET), 100, 128),
)
bad_request_id = st.one_of(
    non_string_values,
    st.just(""),
    repeated(st.sampled_from(REQUEST_ID_ALPHABET), 129, 100_000),
    # A valid id with one character outside the alphabet spliced in.
    st.tuples(
        st.text(alphabet=REQUEST_ID_ALPHABET, max_size=8),
        st.characters(codec="utf-8").filter(lambda c: c not in REQUEST_ID_CHARS),
        st.text(alphabet=REQUEST_ID_ALPHABET, max_size=8),
    ).map("".join),
)

unknown_names = st.one_of(
    st.sampled_from(
        ["self", "args", "kwargs", "DN", "dn ", "Dn", "phone", "task_id", "callback", "", "\x00"]
    ),
    st.text(max_size=12),
    repeated(st.characters(codec="utf-8"), 60, 300),  # named by its start
).filter(lambda name: name not in KNOWN_FIELDS)
unknown_kwargs = st.dictionaries(unknown_names, json_values, min_size=1, max_size=3)

positional_args = st.one_of(
    st.tuples(valid_dn, st.integers(2, 99)).map(list),
    valid_dn.map(lambda d: [d]),
    st.lists(json_values, min_size=1, max_size=3),
)

_ABSENT = object()

# Hypothesis favours the first of a sampled_from and the 0 of an integers(): orders are chosen so
# that this bias falls on the harmless choice.
#: Each payload breaks the contract in this way at least; the rest is drawn freely.
DEFECTS = ("request_id", "webhook_url", "timeout", "dn", "unknown", "dn_missing", "args")
#: How the other fields come: mostly right, so the forced defect is often the one reported.
MODES = ("good", "good", "good", "good", "absent", "bad")


@st.composite
def payloads(draw: st.DrawFn) -> Payload:
    """One payload with at least the drawn defect; every other field right, wrong or absent."""
    forced = draw(st.sampled_from(DEFECTS))

    def field(name: str, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        mode = "bad" if forced == name else draw(st.sampled_from(MODES))
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
    if forced == "unknown" or draw(st.integers(0, 9)) == 9:
        kwargs.update(draw(unknown_kwargs))
    args: list[Any] = (
        draw(positional_args) if forced == "args" or draw(st.integers(0, 9)) == 9 else []
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
    Payload([], {"dn": "79991234567", "self": 1}),  # the name of the task's bound argument
    # A host NFKC turns into a fragment; request_id is wrong too, so nothing may be dialled.
    Payload([], {"dn": "79991234567", "webhook_url": "https://a\uff03b/", "request_id": ""}),
    Payload([], {"dn": "79991234567", "webhook_url": "https://example.com/" + "a" * 2048}),
    Payload([], {"dn": "79991234567", "timeout": 10**30}),
    Payload([], {"dn": "79991234567", "timeout": "10"}),
    Payload([], {"dn": "\u0667\u0669\u0669\u0669\u0661\u0662\u0663\u0664\u0665\u0666\u0667"}),
    Payload([], {"dn": "\uff17\uff19\uff19\uff19\uff11\uff12\uff13\uff14\uff15\uff16\uff17"}),
    Payload([], {"dn": ["79991234567"]}),
    Payload([], {"dn": None, "timeout": None, "webhook_url": None, "request_id": None}),
    Payload([], {"dn": "79991234567", "request_id": "a" * 129}),
]

# --------------------------------------------------------------------------------------------
# The statements.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "wrong"),
    [
        ([], {"dn": "79991234567"}, set()),
        ([], {"dn": "799912345678901", "timeout": 99, "request_id": "a.B_c:1-"}, set()),
        ([], {"dn": "79991234567", "timeout": None, "webhook_url": "https://a.b/x"}, set()),
        ([], {"dn": "7999123456"}, {"dn"}),
        ([], {"dn": "7999123456789012"}, {"dn"}),
        ([], {"dn": "7\u0669991234567"}, {"dn"}),
        ([], {"dn": "79991234567\n"}, {"dn"}),
        ([], {"dn": "79991234567", "timeout": True}, {"timeout"}),
        ([], {"dn": "79991234567", "timeout": 5.0}, {"timeout"}),
        ([], {"dn": "79991234567", "webhook_url": "ftp://a.b/"}, {"webhook_url"}),
        ([], {"dn": "79991234567", "webhook_url": "http://[::1"}, {"webhook_url"}),
        ([], {"dn": "79991234567", "request_id": "a b"}, {"request_id"}),
        (["79991234567"], {"x" * 70: 1}, {"args", "dn", "x" * 70, "x" * 64}),
    ],
)
def test_the_oracle_reads_the_contract(
    args: list[Any], kwargs: dict[str, Any], wrong: set[str]
) -> None:
    """The oracle names exactly the fields the README's argument table rules out."""
    assert judge(args, kwargs).wrong == wrong


def test_every_hand_picked_payload_breaks_the_contract() -> None:
    """Each hand-picked payload has a wrong field: `assume` would skip it silently otherwise."""
    assert [p for p in KNOWN_TRICKY if is_valid(p.args, p.kwargs)] == []


def misbehaviour(
    payload: Payload, verdict: Verdict, result: AsyncResult[Any], deadline: float
) -> str | None:
    """Why ``result`` is not the one `invalid` document ``payload`` calls for (None: it is)."""
    try:
        outcome = result.get(timeout=max(0.1, deadline - time.monotonic()), propagate=False)
    except TimeoutError:
        return f"{payload!r}: not settled within {SETTLE_TIMEOUT_S:g} s (state {result.state})"
    if result.state != "SUCCESS":
        return f"{payload!r}: task ended {result.state}, not invalid\n{result.traceback}"
    try:
        OUTCOME_VALIDATOR.validate(outcome)
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
        before = sim.stats()
        results = [
            app.send_task("callpass.start_call", args=p.args, kwargs=p.kwargs, queue="callpass")
            for p in batch
        ]
        tried += len(batch)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        problems = [
            problem
            for payload, verdict, result in zip(batch, verdicts, results, strict=True)
            if (problem := misbehaviour(payload, verdict, result, deadline)) is not None
        ]
        if problems:
            pytest.fail(f"{len(problems)} of {len(batch)} payloads:\n" + "\n".join(problems))
        after = sim.stats()
        dialled = {
            dn: n - before["starts_by_dn"].get(dn, 0)
            for dn, n in after["starts_by_dn"].items()
            if n != before["starts_by_dn"].get(dn, 0)
        }
        assert after["starts"] == before["starts"], f"the API was asked to call {dialled}"
        assert not {r.id for r in results} & set(after["starts_by_request"])
        assert worker.alive(), worker.log_tail()

    property_holds()

    line = f"property payloads tried: {tried}"
    with capsys.disabled():
        print(f"\n{line}")
    report = os.environ.get("CALLPASS_PROPERTY_REPORT")
    if report:
        Path(report).write_text(line + "\n")
    assert tried >= REQUESTED
