"""``callpass call`` as a person sees it, in a real pseudo-terminal (pexpect), against a real
worker and the simulator: the phases as they come, the pin, the time against the timeout; a
batch's progress bar and summary; and the same runs as JSON for scripts."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.conftest import Simulator
from tests.helpers import callpass, unique_dn
from worker.dev.stack import child_env

#: The escape sequences rich draws with (colours, cursor moves), removed before reading text.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")

pytestmark = pytest.mark.usefixtures("worker")

#: The simulator's sandbox numbers end the same way by their last digit (simulator/calls.py).
OUTCOME_OF_LAST_DIGIT = {"1": "answered", "2": "busy", "3": "no_answer"}


def spawn_call(env: dict[str, str], *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "worker.cli", "call", *args],
        env={**child_env(env), "TERM": "xterm-256color", "COLUMNS": "120"},
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 120),
    )


def screen_text(child: pexpect.spawn) -> str:
    child.expect(pexpect.EOF, timeout=90)
    child.close()
    return ANSI.sub("", str(child.before))


def test_a_call_shows_queued_then_ringing_with_the_pin_then_its_outcome(
    worker_env: dict[str, str], sim: Simulator
) -> None:
    dn = unique_dn("1")  # answered, after a few seconds of ringing
    child = spawn_call(worker_env, dn, "--timeout", "5", "--wait")
    child.expect("task id: ")
    child.expect("ringing")  # redrawn in place while it rings, the time against the timeout
    child.expect(r"ringing.*pin .*\d{4}.* \d+\.\d s of 5 s")  # escapes between the parts
    shown = screen_text(child)
    assert child.exitstatus == 0, shown
    (call,) = [c for c in sim.calls() if c["dn"] == dn]
    final = shown.strip().splitlines()[-1]
    assert "answered" in final and f"pin {call['pin']}" in final and "s in all" in final
    assert dn not in shown and dn[:4] + "*" in shown  # the number masked, the pin in full


def test_a_batch_of_numbers_shows_a_progress_bar_and_a_summary(
    worker_env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    numbers = [unique_dn(d) for d in "1" * 7 + "2" * 7 + "3" * 6]
    path = tmp_path / "numbers.txt"
    path.write_text("# a comment line\n" + "\n\n".join(numbers) + "\n")
    child = spawn_call(worker_env, "--file", str(path), "--timeout", "3", "--wait")
    child.expect("sent 20 calls")
    child.expect(r"placed\s.*\d+/20")
    child.expect(r"settled\s.*20/20")
    shown = screen_text(child)
    assert child.exitstatus == 0, shown
    expected = Counter(OUTCOME_OF_LAST_DIGIT[dn[-1]] for dn in numbers)
    totals = shown[shown.index("20 calls") :]
    for outcome, count in expected.items():
        assert re.search(rf"{outcome}\s*│\s*{count}\s*│", totals), (outcome, count, totals)
    assert not any(dn in shown for dn in numbers)


def test_a_bad_line_refuses_the_whole_batch_naming_the_line(
    worker_env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    good = unique_dn("1")
    path = tmp_path / "numbers.txt"
    path.write_text(f"{good}\n+7 999 12\n")
    out = callpass("call", "--file", str(path), env=worker_env)
    assert out.returncode == 2
    assert "line 2: dn:" in out.stderr and "nothing was sent" in out.stderr
    assert sim.starts_to(good) == 0


def test_json_mode_prints_one_object_per_call(
    worker_env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    numbers = [unique_dn("1"), unique_dn("2")]
    path = tmp_path / "numbers.txt"
    path.write_text("\n".join(numbers))
    out = callpass(
        "call", "--file", str(path), "--timeout", "3", "--wait", "--json", env=worker_env
    )
    assert out.returncode == 0, out.stderr
    shown: list[dict[str, Any]] = [json.loads(line) for line in out.stdout.splitlines()]
    assert [s["line"] for s in shown] == [1, 2]
    for line, dn in zip(shown, numbers, strict=True):
        (call,) = [c for c in sim.calls() if c["dn"] == dn]
        assert line["pin"] == call["pin"] and line["outcome"]["callid"] == call["callid"]
    assert [s["phase"] for s in shown] == ["answered", "busy"]


def test_a_batch_refuses_a_repeated_number_an_unreadable_file_and_too_many(
    worker_env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    dn = unique_dn("1")
    repeated = tmp_path / "repeated.txt"
    repeated.write_text(f"\ufeff{dn}\n{unique_dn('1')}\n{dn}  # again\n")  # a BOM before line 1
    out = callpass("call", "--file", str(repeated), env=worker_env)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[0].endswith("line 3: dn: the same number as line 1")
    assert sim.starts_to(dn) == 0
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe7\x009\x00")
    out = callpass("call", "--file", str(binary), env=worker_env)
    assert out.returncode == 2 and "cannot read it (UnicodeDecodeError" in out.stderr
    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"7999000{n:07d}1" for n in range(1001)))
    out = callpass("call", "--file", str(many), env=worker_env)
    assert out.returncode == 2 and "1001 numbers: a batch is at most 1000 calls" in out.stderr


def test_calls_not_settled_in_time_are_named_by_task_id(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "numbers.txt"
    path.write_text(f"{unique_dn('3')}\n{unique_dn('3')}\n")  # rings to its timeout
    args = ("--file", str(path), "--timeout", "10", "--wait", "--wait-timeout", "1")
    out = callpass("call", *args, env=worker_env)
    assert out.returncode == 1, out.stderr
    assert "2 call(s) not settled within 1 s" in out.stderr
    named = re.findall(r"line (\d): task id ([0-9a-f-]{36})", out.stderr)
    assert [line for line, _ in named] == ["1", "2"]


def test_ctrl_c_leaves_no_traceback_and_names_the_call(worker_env: dict[str, str]) -> None:
    child = spawn_call(worker_env, unique_dn("3"), "--timeout", "10", "--wait")
    child.expect("ringing")
    child.sendintr()
    shown = screen_text(child)
    assert child.exitstatus == 130, shown
    assert "interrupted: 1 call(s) not settled yet" in shown and "Traceback" not in shown
    assert re.search(r"task id [0-9a-f-]{36} \(callpass result", shown)


def test_a_broker_that_fails_while_sending_is_reported_without_secrets(
    worker_env: dict[str, str],
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"redis://:s3cret@127.0.0.1:{closed.getsockname()[1]}/0"
        out = callpass("call", unique_dn("1"), env={**worker_env, "CALLPASS_REDIS_URL": gone})
    assert out.returncode == 1
    assert "sending stopped after 0 of 1 call(s)" in out.stderr
    assert "s3cret" not in out.stderr and "Traceback" not in out.stderr
