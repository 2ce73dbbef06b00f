"""Numbers are masked on every log line, in both log formats: the message and its arguments,
tracebacks and stacks, and digits right after the escapes of a bytes or str repr."""

from __future__ import annotations

import io
import json
import logging
import pickle
import sys
from collections.abc import Callable, Iterator

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.masking import mask_log_text, mask_text
from worker.ops.logs import bind_log_context, clear_log_context, configure_logging

DN = "79161234567"


@pytest.mark.parametrize(
    "text",
    [
        r"b'\x0b79161234567\x94'",
        r"b'\x8c\x0b79161234567'",
        r"\n79161234567",
        r"\t79161234567\r",
        r"\\79161234567",
        r"\u00a079161234567",
        r"\U0001f60079161234567",
        r"\N{NO-BREAK SPACE}79161234567",
        r"\x80\x0479161234567\x00",
        r"'\'79161234567\''",
        repr(b"\xff79161234567\xfe"),
        repr("\x0779161234567"),
        json.dumps("\x0b79161234567"),
        repr(pickle.dumps({"dn": "79161234567"}, 2)),  # "…79161234567q\x02"
        "call-79161234567",
        repr(repr(b"\x0079161234567")),  # a repr inside a repr
    ],
)
def test_digits_after_an_escape_are_masked(text: str) -> None:
    masked = mask_text(text)
    assert DN not in masked
    assert "7916*****67" in masked


@pytest.mark.parametrize(
    "text",
    [
        "task 3f2a1b4c-1234-4567-89ab-123456789012 received",  # a UUID's last group
        "digest 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "delivery tag 1a2b3c4d5e6f7a8b9c0d1234567890ab",
        "a short 123456789 stays",
        r"b'\x0b123456789'",  # nine digits after an escape: not a number we mask
    ],
)
def test_what_is_no_number_stays_readable(text: str) -> None:
    assert mask_text(text) == text


# -- property: any body the serialisers make, as Celery would print it -------------------------

numbers = st.integers(min_value=10, max_value=14).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n).map(lambda d: "7" + d)
)
# Bytes around the number that are not letters or digits (a letter glued to a number is taken
# for part of a token such as a hex digest, and stays as it is).
edges = st.binary(max_size=6).map(lambda b: bytes(c for c in b if not chr(c).isalnum()))


def _reprs(dn: str, before: bytes, after: bytes) -> list[str]:
    kwargs = {"dn": dn, "timeout": 3}
    triple = ((), kwargs, {"callbacks": None})
    return [
        *(repr(pickle.dumps(triple, protocol)) for protocol in range(1, 6)),
        repr(yaml.dump([[], kwargs]).encode()),
        repr(json.dumps([[], kwargs]).encode()),
        repr(before + dn.encode() + after),
        repr(before.decode("latin-1") + dn + after.decode("latin-1")),
        repr(repr(before + dn.encode() + after)),  # a repr inside a repr: escaped backslashes
    ]


@settings(max_examples=300, deadline=None)
@given(numbers, edges, edges)
def test_no_serialised_number_survives_masking(dn: str, before: bytes, after: bytes) -> None:
    for text in _reprs(dn, before, after):
        assert dn not in mask_text(text), text


# -- a real logger, both formats ---------------------------------------------------------------


@pytest.fixture
def log_output() -> Iterator[Callable[[str], io.StringIO]]:
    """``configure(fmt)`` points the worker's own logging setup at a buffer; the root
    logger's handlers come back afterwards."""
    root = logging.getLogger()
    saved, level, stderr = list(root.handlers), root.level, sys.stderr

    def configure(fmt: str) -> io.StringIO:
        sys.stderr = buffer = io.StringIO()
        configure_logging("DEBUG", fmt)
        sys.stderr = stderr
        return buffer

    yield configure
    sys.stderr = stderr
    root.handlers[:] = saved
    root.setLevel(level)


def _log_everything(log: logging.Logger, dn: str) -> None:
    body = b"\x80\x04\x95\x8c\x0b" + dn.encode() + b"\x94"
    log.warning("body %r (%s)", body, {"dn": dn})
    try:
        raise ValueError(f"cannot decode {body!r}")
    except ValueError:
        log.exception("decode failed for %s", repr(dn))
    try:
        raise KeyError(dn)
    except KeyError:
        log.error("lookup failed", exc_info=True)
    log.info("where: %s", dn, stack_info=True)  # the stack shows this very line
    bind_log_context(task_id=dn, request_id=dn)  # a producer's ids may be the number itself
    try:
        log.info("settled")
    finally:
        clear_log_context()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_line_of_a_real_logger_is_masked(
    log_output: Callable[[str], io.StringIO], fmt: str
) -> None:
    buffer = log_output(fmt)
    _log_everything(logging.getLogger("callpass.test"), DN)
    text = buffer.getvalue()
    assert "Traceback" in text and "cannot decode" in text  # the tracebacks are there...
    assert DN not in text  # ...masked, like everything else
    assert "7916*****67" in text
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert len(lines) == 5 and "exception" in lines[1] and "stack" in lines[3]
        assert lines[4]["request_id"] == "7916*****67"


@settings(max_examples=50, deadline=None)
@given(numbers, edges)
def test_a_real_logger_masks_any_number_in_either_format(dn: str, before: bytes) -> None:
    for fmt in ("text", "json"):
        root = logging.getLogger()
        saved, stderr = list(root.handlers), sys.stderr
        sys.stderr = buffer = io.StringIO()
        try:
            configure_logging("DEBUG", fmt)
            log = logging.getLogger("callpass.test")
            log.warning("raw %r", before + dn.encode())
            try:
                raise RuntimeError(repr(before + dn.encode()))
            except RuntimeError:
                log.exception("failed")
        finally:
            sys.stderr = stderr
            root.handlers[:] = saved
        assert dn not in buffer.getvalue(), (fmt, buffer.getvalue())


def test_a_hex_token_that_starts_with_ten_digits_is_not_a_number() -> None:
    """A webhook event id's hex can start with 10+ digits (about 1 in 100): it stays readable,
    so operators can find the id in the logs; digits followed by a short tail are masked."""
    event_id = "msg_686827117916a040b84cce257381b717"
    assert mask_text(f"webhook {event_id} delivered") == f"webhook {event_id} delivered"
    assert "79161234567" not in mask_text("x_79161234567a")


def test_a_number_after_a_hyphenated_word_is_masked_but_a_uuid_tail_is_not() -> None:
    assert "79161234567" not in mask_text("signup-2024-79161234567")
    task_id = "0f1e2d3c-4b5a-6978-89ab-123456789012"
    assert mask_text(f"task {task_id}") == f"task {task_id}"


def test_log_text_hides_bearer_tokens_pins_and_urllib3_paths() -> None:
    text = (
        "raised: {'pin': '0827', 'code': '0446'} pin=012345 Authorization: Bearer abcdef0123 "
        "status code: 503 with url: /hook/T0/secret?sig=1 (Caused by x)"
    )
    masked = mask_log_text(text)
    for secret in ("0827", "0446", "012345", "abcdef0123", "/hook/T0/secret", "sig=1"):
        assert secret not in masked
    assert "status code: 503" in masked and "Bearer ***" in masked


def test_a_decimal_fraction_is_no_number() -> None:
    assert mask_text("succeeded in 0.052612345678948s") == "succeeded in 0.052612345678948s"
    assert mask_text("took 1.5 s for 79161234567.") == "took 1.5 s for 7916*****67."
