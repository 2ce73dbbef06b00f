"""Flower refuses to listen beyond loopback without authentication (worker/flower/guard.py,
worker/flower/options.py; the login rules: tests/test_flower_login.py).

The rule is a pure function of the command line, the environment and the config file's
namespace; a comparison with the installed Flower's own option parsing keeps our reading of
its options honest, and two real ``celery … flower`` processes show the hook in
``worker.celery_app`` at work.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flower_resolver import FlowerResolver, flower_resolver
from worker.dev.stack import Stack, child_env, free_port, wait_until
from worker.flower.guard import check_flower_binding, check_flower_process, is_loopback
from worker.flower.options import (
    FLOWER_OPTION_NAMES,
    FlowerOptions,
    effective_options,
    flower_arguments,
    is_flower_command,
    read_flower_config,
)

CELERY = ["celery", "-A", "worker.celery_app", "flower"]
REFUSED = "without authentication"


def flower(*args: str) -> list[str]:
    return [*CELERY, *args]


# --- which processes are Flower --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["celery", "-A", "worker.celery_app", "flower"], []),
        (["celery", "-A", "worker.celery_app", "flower", "--port=1"], ["--port=1"]),
        (["/venv/bin/celery", "--app=worker.celery_app", "flower"], []),
        (["/venv/bin/celery", "--app", "worker.celery_app", "flower"], []),
        (["celery", "-Aworker.celery_app", "flower"], []),
        (["celery", "-qA", "worker.celery_app", "flower"], []),
        (["celery", "-q", "-C", "-A", "x", "-b", "redis://", "flower"], []),
        (["celery", "--broker", "redis://", "--workdir", "/tmp", "flower", "-x"], ["-x"]),
        (["celery", "--skip-checks", "--quiet", "-A", "x", "flower"], []),
        (["celery", "-A", "x", "--", "flower"], []),
        (["/lib/python3.11/site-packages/celery/__main__.py", "-A", "x", "flower"], []),
        (["/lib/python3.11/site-packages/flower/__main__.py", "-A", "x", "flower"], []),
        (["C:\\venv\\Scripts\\celery.exe", "-A", "x", "flower"], []),
        # Not Flower: other subcommands, a worker *named* flower, other programs.
        (["celery", "-A", "worker.celery_app", "worker"], None),
        (["celery", "-A", "worker.celery_app", "worker", "-n", "flower"], None),
        (["celery", "-A", "flower", "worker"], None),
        (["celery", "--app", "flower", "worker"], None),
        (["celery", "-A", "x", "inspect", "flower"], None),
        (["celery"], None),
        ([], None),
        (["/venv/bin/pytest", "-k", "flower"], None),
        (["/venv/bin/python", "-m", "pytest", "flower"], None),
        (["/lib/python3.11/site-packages/pytest/__main__.py", "flower"], None),
        (["callpass", "run", "flower"], None),
    ],
)
def test_flower_arguments_finds_the_flower_subcommand(
    argv: list[str], expected: list[str] | None
) -> None:
    assert flower_arguments(argv) == expected
    assert is_flower_command(argv) is (expected is not None)


# --- loopback -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.2",
        "127.255.255.254",
        "::1",
        "localhost",
        "LocalHost",
        "::ffff:127.0.0.1",
    ],
)
def test_loopback_addresses(address: str) -> None:
    assert is_loopback(address)


@pytest.mark.parametrize(
    "address",
    [
        "",  # Flower's default: every interface
        "0.0.0.0",
        "::",
        "10.0.0.5",
        "192.168.1.10",
        "128.0.0.1",
        "::ffff:10.0.0.1",
        "2001:db8::1",
        "example.com",
        "localhost.example.com",
        "127.1",  # getaddrinfo would take it; we do not guess
        "[::1]",
        " 127.0.0.1",
    ],
)
def test_other_addresses_are_not_loopback(address: str) -> None:
    assert not is_loopback(address)


# --- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--address=127.0.0.1"],
        ["--address=127.0.0.1", "--port=5555"],
        ["--address=::1"],
        ["--address=localhost"],
        ["--address=0.0.0.0", "--address=127.0.0.1"],  # the last one counts
        ["-address=127.0.0.1"],  # Tornado strips any number of dashes
        ["--unix-socket=/run/flower.sock"],  # not a network listener
        ["--unix_socket=/run/flower.sock", "--address=0.0.0.0"],
        ["--address=0.0.0.0", "--basic-auth=admin:s3cret"],
        ["--address=0.0.0.0", "--basic_auth=admin:s3cret,ops:other"],
        ["--basic-auth=admin:s3cret"],  # every interface, with a password
        ["--address=10.1.2.3", "--auth=.*@example.com"],
        ["--auth=ops@example.com|dev@example.com"],
        ["--help"],  # Click prints the help and exits before Flower binds anything
    ],
)
def test_allowed_command_lines(args: list[str]) -> None:
    assert check_flower_binding(flower(*args), {}) is None


@pytest.mark.parametrize(
    "args",
    [
        [],  # the default address '' is every interface
        ["--port=5555"],
        ["--address="],
        ["--address=0.0.0.0"],
        ["--address=::"],
        ["--address=192.168.1.10"],
        ["--address=my-host.example.com"],
        ["--address=127.0.0.1", "--address=0.0.0.0"],
        ["--ADDRESS=127.0.0.1"],  # option names are case-sensitive; Flower ignores this
        ["--address=0.0.0.0", "--auth="],
        # OAuth settings without --auth protect nothing (Flower lets everyone in).
        ["--address=0.0.0.0", "--auth_provider=flower.views.auth.GithubLoginHandler"],
        ["--address=0.0.0.0", "--oauth2_key=k", "--oauth2_secret=s"],
    ],
)
def test_refused_command_lines(args: list[str]) -> None:
    message = check_flower_binding(flower(*args), {})
    assert message is not None
    assert REFUSED in message
    assert "--address=127.0.0.1" in message and "--basic-auth=user:password" in message


@pytest.mark.parametrize(
    "args",
    [
        # Tornado stops at the first argument kept that does not start with "-", and Flower
        # keeps any bare word naming an attribute of Tornado's options ("define", "items").
        ["address=127.0.0.1"],
        ["--address=0.0.0.0", "basic_auth=admin:s3cret"],
        ["port=5555", "--address=127.0.0.1"],
        ["--address", "127.0.0.1"],  # Tornado reads no value from the next argument
        ["define", "--basic-auth=admin:s3cretpass"],
        ["--address=127.0.0.1", "items", "--basic-auth=admin:s3cretpass"],
    ],
)
def test_a_bare_word_after_flower_is_refused_by_position(args: list[str]) -> None:
    message = check_flower_binding(flower(*args), {})
    assert message is not None
    bare = next(i for i, a in enumerate(args, start=1) if not a.startswith("-"))
    assert f"argument #{bare} is not an option" in message


def test_the_message_names_the_address() -> None:
    every = check_flower_binding(flower(), {})
    assert every is not None and "every interface (address '')" in every
    lan = check_flower_binding(flower("--address=10.0.0.5"), {})
    assert lan is not None and "'10.0.0.5'" in lan


def test_not_a_flower_process_is_never_refused() -> None:
    assert check_flower_binding(["celery", "-A", "worker.celery_app", "worker"], {}) is None
    assert check_flower_binding(["pytest", "-k", "flower"], {}) is None
    assert check_flower_process(["celery", "-A", "x", "worker", "-n", "flower"], {}) is None


@pytest.mark.parametrize(
    ("entries", "complaint"),
    [
        ("admin:", "lets user 'admin' in without a password"),
        ("admin:s3cret,guest:", "entry #2 that lets user 'guest' in without a password"),
        ("justapassword", "entry #1 not in the form user:password"),
        ("admin:s3cret,hunter2", "entry #2 not in the form user:password"),
        ("", "entry #1 empty"),  # Flower's list is [''], not none
        (",", "entry #1 empty"),
        ("admin:s3cret,", "entry #2 empty"),  # a trailing comma: Flower admits an empty login
        (",admin:s3cret", "entry #1 empty"),
        ("admin:s3cret,,ops:other", "entry #2 empty"),
        ("admin: ", "lets user 'admin' in without a password"),
        (":s3cret", "entry #1 with a blank user name"),
        (" \t:s3cret", "entry #1 with a blank user name"),
        ("admin:s3cr\u00e9t", "entry #1 with characters other than ASCII"),
    ],
)
def test_basic_auth_without_a_password_does_not_count(entries: str, complaint: str) -> None:
    for address in ("0.0.0.0", "127.0.0.1"):  # a login that admits anyone is refused anywhere
        message = check_flower_binding(
            flower(f"--address={address}", f"--basic-auth={entries}"), {}
        )
        assert message is not None and complaint in message
        for secret in ("s3cret", "justapassword", "hunter2"):
            assert secret not in message  # the refusal never quotes a password


# --- environment, config file and command line -----------------------------------------------


@pytest.mark.parametrize(
    ("environ", "allowed"),
    [
        ({"FLOWER_ADDRESS": "127.0.0.1"}, True),
        ({"FLOWER_address": "127.0.0.1"}, True),  # Flower lower-cases the suffix
        ({"FLOWER_ADDRESS": "0.0.0.0"}, False),
        ({"FLOWER_ADDRESS": ""}, False),
        ({"FLOWER_BASIC_AUTH": "admin:s3cret"}, True),
        ({"FLOWER_BASIC_AUTH": "admin:s3cret,ops:other"}, True),
        ({"FLOWER_BASIC_AUTH": ""}, False),
        ({"FLOWER_BASIC_AUTH": "admin:"}, False),
        ({"FLOWER_BASIC_AUTH": "admin:s3cret,"}, False),
        ({"FLOWER_BASIC_AUTH": "admin:s3cret", "FLOWER_ADDRESS": "127.0.0.1"}, True),
        ({"FLOWER_BASIC_AUTH": "admin:s3cret,", "FLOWER_ADDRESS": "127.0.0.1"}, False),
        ({"FLOWER_AUTH": ".*@example.com"}, True),
        ({"FLOWER_UNIX_SOCKET": "/run/flower.sock"}, True),
        ({"FLOWER_OAUTH2_KEY": "k", "FLOWER_OAUTH2_SECRET": "s"}, False),
        ({"FLOWER_UNAUTHENTICATED_API": "true"}, False),  # opens the API further, if anything
        ({"FLOWER_ADDRESSES": "127.0.0.1"}, False),  # not an option: ignored
        ({"CALLPASS_FLOWER_ADDRESS": "127.0.0.1"}, False),
    ],
)
def test_environment_variables(environ: dict[str, str], allowed: bool) -> None:
    assert (check_flower_binding(flower(), environ) is None) is allowed


def test_the_command_line_beats_the_environment() -> None:
    env = {"FLOWER_ADDRESS": "127.0.0.1"}
    assert check_flower_binding(flower("--address=0.0.0.0"), env) is not None
    env = {"FLOWER_ADDRESS": "0.0.0.0"}
    assert check_flower_binding(flower("--address=127.0.0.1"), env) is None


def test_the_config_file_beats_the_environment_and_loses_to_the_command_line() -> None:
    config: dict[str, object] = {"address": "0.0.0.0"}
    assert check_flower_binding(flower(), {"FLOWER_ADDRESS": "127.0.0.1"}, config) is not None
    assert check_flower_binding(flower("--address=127.0.0.1"), {}, config) is None
    config = {"address": "127.0.0.1"}
    assert check_flower_binding(flower(), {"FLOWER_ADDRESS": "0.0.0.0"}, config) is None
    assert check_flower_binding(flower("--address=0.0.0.0"), {}, config) is not None


@pytest.mark.parametrize(
    ("config", "allowed"),
    [
        ({"address": "127.0.0.1"}, True),
        ({"address": "0.0.0.0"}, False),
        ({"address": None}, False),  # Tornado accepts None: every interface
        ({"basic_auth": ["admin:s3cret"]}, True),
        ({"basic_auth": "admin:s3cret,ops:other"}, True),
        ({"basic_auth": []}, False),
        ({"basic_auth": ["admin:"]}, False),
        ({"basic_auth": ["admin:s3cret", ""]}, False),
        ({"basic_auth": ["admin:s3cret", None]}, False),  # Tornado keeps None in a list
        ({"basic_auth": "admin:s3cret,"}, False),
        ({"basic_auth": "admin:s3cret,", "address": "127.0.0.1"}, False),
        ({"auth": ".*@example.com"}, True),
        ({"unix_socket": "/run/flower.sock"}, True),
        ({"port": 5555, "__file__": "/etc/flowerconfig.py"}, False),
        ({"ADDRESS": "127.0.0.1"}, False),  # names are case-sensitive in the file too
    ],
)
def test_config_file_values(config: dict[str, object], allowed: bool) -> None:
    assert (check_flower_binding(flower(), {}, config) is None) is allowed


def test_effective_options_resolves_every_source() -> None:
    options = effective_options(
        ["--conf=/etc/other.py", "--port=1"],
        {"FLOWER_BASIC_AUTH": "a:b,c:d", "FLOWER_ADDRESS": "10.0.0.1"},
        {"auth": "x@example.com", "address": "127.0.0.1"},
    )
    assert options == FlowerOptions(
        address="127.0.0.1",
        basic_auth=("a:b", "c:d"),
        auth="x@example.com",
        conf="/etc/other.py",
    )


# --- the config file on disk ------------------------------------------------------------------


def test_the_default_config_file_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_flower_process(flower("--address=127.0.0.1"), {}) is None
    assert check_flower_process(flower(), {}) is not None  # no file: the default, everywhere
    (tmp_path / "flowerconfig.py").write_text("address = '127.0.0.1'\n")
    assert check_flower_process(flower(), {}) is None
    (tmp_path / "flowerconfig.py").write_text(
        "address = '0.0.0.0'\nbasic_auth = ['admin:' + 's3cret']\n"
    )
    assert check_flower_process(flower(), {}) is None
    (tmp_path / "flowerconfig.py").write_text("address = '0.0.0.0'\n")
    message = check_flower_process(flower(), {})
    assert message is not None and "'0.0.0.0'" in message


def test_conf_from_the_command_line_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flowerconfig.py").write_text("address = '127.0.0.1'\n")
    other = tmp_path / "other.py"
    other.write_text("address = '0.0.0.0'\n")
    assert check_flower_process(flower(f"--conf={other}"), {}) is not None
    assert check_flower_process(flower(), {"FLOWER_CONF": str(other)}) is not None
    assert check_flower_process(flower("--conf=other.py"), {}) is not None  # relative to cwd
    assert read_flower_config(["--conf=other.py"], {}) == {
        "__file__": str(other),
        "address": "0.0.0.0",
    }


def test_a_config_file_that_fails_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flowerconfig.py").write_text("address = '127.0.0.1'\nraise RuntimeError('boom')\n")
    message = check_flower_process(flower("--address=127.0.0.1"), {})
    assert message is not None
    assert "flowerconfig.py" in message and "RuntimeError: boom" in message


def test_a_missing_conf_file_is_left_to_flower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flower stops on a missing --conf file itself; the guard judges the rest."""
    monkeypatch.chdir(tmp_path)
    assert read_flower_config(["--conf=missing.py"], {}) is None
    assert check_flower_process(flower("--conf=missing.py", "--address=127.0.0.1"), {}) is None
    assert check_flower_process(flower("--conf=missing.py"), {}) is not None


# --- the same reading as the installed Flower ---------------------------------------------------

# (args, env, flowerconfig.py text or None); "error" cases are ones Flower refuses to start.
_CASES: list[tuple[list[str], dict[str, str], str | None]] = [
    ([], {}, None),
    (["--address=127.0.0.1"], {}, None),
    (["--address=0.0.0.0", "--address=127.0.0.1"], {}, None),
    (["-address=127.0.0.1", "--port=1"], {}, None),
    (["--ADDRESS=127.0.0.1"], {}, None),
    (["address=127.0.0.1", "--basic-auth=a:b"], {}, None),
    (["positional", "--address=127.0.0.1"], {}, None),
    (["--", "--address=127.0.0.1"], {}, None),
    (["--debug", "--address=::1"], {}, None),
    (["--basic_auth=a:b,c:d"], {}, None),
    (["--basic-auth="], {}, None),
    (["--basic-auth=a:b,"], {}, None),  # a trailing comma is an empty entry, kept
    (["--basic-auth=,a:b,,c: "], {}, None),
    ([], {"FLOWER_BASIC_AUTH": "a:b,"}, None),
    ([], {}, "basic_auth = 'a:b,'\n"),
    ([], {}, "basic_auth = ['a:b', '', None]\n"),
    (["--unix-socket=/tmp/f.sock", "--auth=x@example.com"], {}, None),
    ([], {"FLOWER_ADDRESS": "127.0.0.1"}, None),
    ([], {"FLOWER_address": "127.0.0.1"}, None),
    ([], {"FLOWER_BASIC_AUTH": "a:b,c:d", "FLOWER_AUTH": "x@example.com"}, None),
    ([], {"FLOWER_BASIC_AUTH": ""}, None),
    ([], {"FLOWER_UNIX_SOCKET": "/tmp/f.sock"}, None),
    (["--address=0.0.0.0"], {"FLOWER_ADDRESS": "127.0.0.1"}, None),
    ([], {"FLOWER_ADDRESS": "127.0.0.1"}, "address = '0.0.0.0'\n"),
    (["--address=127.0.0.1"], {}, "address = '0.0.0.0'\n"),
    ([], {}, "address = None\nbasic_auth = 'a:b,c:d'\n"),
    ([], {}, "basic_auth = ['a:b']\nauth = 'x@example.com'\nunix_socket = ''\n"),
    (["--conf=other.py"], {}, "address = '127.0.0.1'\n"),
    ([], {"FLOWER_CONF": "other.py"}, "address = '127.0.0.1'\n"),
]


@pytest.fixture(scope="module")
def resolver() -> Iterator[FlowerResolver]:
    with flower_resolver() as reference:
        yield reference


def test_our_reading_matches_the_installed_flower(resolver: FlowerResolver, tmp_path: Path) -> None:
    cases: list[tuple[list[str], dict[str, str], Path]] = []
    for n, (args, env, config) in enumerate(_CASES):
        cwd = tmp_path / f"case{n}"
        cwd.mkdir()
        if config is not None:
            (cwd / "flowerconfig.py").write_text(config)
            (cwd / "other.py").write_text("address = '10.9.8.7'\n")
        cases.append((args, env, cwd))
    assert resolver.option_names == FLOWER_OPTION_NAMES
    for args, env, cwd in cases:
        theirs = resolver.resolve(args, env, cwd)
        namespace = read_flower_config(args, env, cwd=str(cwd))
        ours = effective_options(args, env, namespace)
        assert "error" not in theirs, (args, env, cwd)
        assert {
            "address": ours.address if theirs["address"] is not None else None,
            "unix_socket": ours.unix_socket,
            "basic_auth": list(ours.basic_auth),
            "auth": ours.auth,
            "conf": ours.conf,
        } == {**theirs, "basic_auth": list(theirs["basic_auth"] or [])}, (args, env, cwd)


def test_flower_itself_refuses_what_we_cannot_read(
    resolver: FlowerResolver, tmp_path: Path
) -> None:
    """``--address 0.0.0.0`` (value apart) stops Flower; the guard refuses it first anyway."""
    assert resolver.resolve(["--address", "127.0.0.1"], {}, tmp_path) == {"error": "Error"}
    assert check_flower_binding(flower("--address", "127.0.0.1"), {}) is not None


# --- real processes ---------------------------------------------------------------------------


def _flower_env(redis_url: str) -> dict[str, str]:
    env = child_env({"CALLPASS_REDIS_URL": redis_url})
    for key in [k for k in env if k.startswith("FLOWER_")]:
        del env[key]  # the runner's own Flower settings must not decide this test
    return env


def _port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_real_flower_refuses_every_interface_and_serves_on_loopback(
    stack: Stack, redis_url: str, tmp_path: Path
) -> None:
    # An empty config file of our own, so a flowerconfig.py in the working directory cannot
    # change the outcome.
    conf = tmp_path / "flowerconfig.py"
    conf.write_text("")
    env = _flower_env(redis_url)
    celery = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower"]

    port = free_port()
    refused = stack.spawn(
        "flower-refused", [*celery, "--address=0.0.0.0", f"--port={port}", f"--conf={conf}"], env
    )
    wait_until(lambda: not refused.alive(), 60, "the refusing Flower to exit")
    assert refused.popen.returncode not in (0, None)
    log = refused.log_path.read_text()
    assert "callpass: Flower would listen on '0.0.0.0' without authentication" in log
    assert "Traceback" not in log
    assert not _port_answers(port)

    port = free_port()
    served = stack.spawn(
        "flower-loopback",
        [*celery, "--address=127.0.0.1", f"--port={port}", f"--conf={conf}"],
        env,
    )
    try:

        def up() -> bool:
            if not served.alive():
                raise RuntimeError(f"Flower exited:\n{served.log_tail()}")
            return _port_answers(port)

        wait_until(up, 60, "Flower on 127.0.0.1")
    finally:
        served.stop()
    assert "callpass:" not in served.log_path.read_text()
