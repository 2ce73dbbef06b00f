"""The Flower guard never lets through a login that needs no password (issue 11, item 1).

The property: for every configuration the guard accepts (command line, ``FLOWER_*``
environment, Flower's config file, ``CALLPASS_FLOWER_BASIC_AUTH``), Flower's own code refuses
an empty and a blank login. Flower's own code on both sides: its option handling
(``flower.command.apply_env_options`` / ``apply_options``, in a separate interpreter because it
changes Tornado's global options and the root logger: tests/flower_resolver.py) resolves the
configuration, and its ``BaseHandler.get_current_user`` (imported here) judges each
``Authorization`` header against what it resolved. The only accepted configurations that let a
blank login in are the ones that ask for no login at all: loopback only, or a Unix socket.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.httputil
import tornado.web
from flower.views import BaseHandler
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.flower_resolver import FlowerResolver, flower_resolver
from worker.flower.entry import login_variables
from worker.flower.guard import check_flower_options, is_loopback
from worker.flower.options import effective_options, read_flower_config
from worker.settings import SettingsError, load_settings

EXAMPLES = int(os.environ.get("CALLPASS_FLOWER_PROPERTY_EXAMPLES", "1000"))


@pytest.fixture(scope="module")
def resolver() -> Iterator[FlowerResolver]:
    with flower_resolver() as reference:
        yield reference


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flower-login")


class _Connection:
    def set_close_callback(self, callback: object) -> None:
        pass


def flower_admits(basic_auth: list[str | None] | None, auth: str, authorization: str) -> bool:
    """Whether Flower's own ``get_current_user`` lets a request with this header in."""
    app = tornado.web.Application(cookie_secret="not-a-secret")  # --auth reads a signed cookie
    app.options = type("Options", (), {"basic_auth": basic_auth, "auth": auth})()  # type: ignore[attr-defined]
    request = tornado.httputil.HTTPServerRequest(
        headers=tornado.httputil.HTTPHeaders({"Authorization": authorization, "Host": "127.0.0.1"}),
        connection=_Connection(),  # type: ignore[arg-type]
        start_line=tornado.httputil.RequestStartLine("GET", "/api/workers", "HTTP/1.1"),
    )
    try:
        return bool(BaseHandler(app, request).get_current_user())
    except tornado.web.HTTPError:
        return False  # 401
    except TypeError:
        return False  # hmac.compare_digest on non-ASCII text: Tornado answers 500


def basic(credential: str) -> str:
    """The ``Authorization`` header for ``credential``; ``Basic =`` for the empty one."""
    return "Basic " + (base64.b64encode(credential.encode()).decode() or "=")


# --- configurations ----------------------------------------------------------------------------

_PIECE = st.text(alphabet="ab \t", max_size=3)
_HOSTILE = st.one_of(
    st.just(""),
    _PIECE,
    st.builds("{}:{}".format, _PIECE, _PIECE),
    st.builds("{}:{}:{}".format, _PIECE, _PIECE, _PIECE),
    st.sampled_from(["\u00e9:x", "a:b\u00a0", " : ", ":"]),
)
_PAD = st.text(alphabet=" \t", max_size=1)
#: Entries the guard should accept: blanks around the halves, ':' in the password, ','
#: inside a config file list's item.
_SOUND = st.one_of(
    st.sampled_from(["admin:s3cret", "ops:an0ther", "a:b,c"]),
    st.builds(
        "{}{}{}:{}{}{}".format,
        _PAD,
        st.text(alphabet="ab", min_size=1, max_size=2),
        _PAD,
        _PAD,
        st.text(alphabet="ab:", min_size=1, max_size=3),
        _PAD,
    ),
)
_ENTRY = st.one_of(_HOSTILE, _SOUND, _SOUND)
_LIST = st.lists(_ENTRY, min_size=1, max_size=3)
_TEXT = _LIST.map(",".join)  # one string, as the command line and FLOWER_* give it
_ADDRESS = st.sampled_from(["", "0.0.0.0", "127.0.0.1", "::1", "10.1.2.3", "127.1"])


@st.composite
def configurations(draw: st.DrawFn) -> tuple[list[str], dict[str, str], str | None, str]:
    """(Flower's arguments, FLOWER_* variables, config file text or None, our login)."""
    args: list[str] = []
    env: dict[str, str] = {}
    config: list[str] = []
    for source in draw(st.lists(st.sampled_from(["arg", "env", "file"]), unique=True)):
        if source == "arg":
            name = draw(st.sampled_from(["--basic-auth", "--basic_auth", "-basic-auth"]))
            args.append(f"{name}={draw(_TEXT)}")
        elif source == "env":
            env["FLOWER_BASIC_AUTH"] = draw(_TEXT)
        else:
            value: object = draw(st.one_of(_TEXT, _LIST, st.lists(st.none(), max_size=1)))
            config.append(f"basic_auth = {value!r}")
    if draw(st.booleans()):
        args.append(f"--address={draw(_ADDRESS)}")
    if draw(st.booleans()):
        config.append(f"address = {draw(_ADDRESS)!r}")
    if draw(st.integers(0, 9)) == 0:
        args.append("--auth=.*@example.com")
    if draw(st.integers(0, 9)) == 0:
        env["FLOWER_UNIX_SOCKET"] = "/run/flower.sock"
    # Mostly none or a sound one: most others stop at the settings check, before the guard.
    login = draw(
        st.one_of(st.just(""), st.just(""), st.just("ops:long-enough,dev:also-long"), _TEXT)
    )
    return args, env, ("\n".join(config) + "\n" if config else None), login


_BLANK = st.text(alphabet=" \t\r\n\x0b\x0c", max_size=3)
#: Empty and blank logins, and ones blank on one side of the ':' or both.
_BLANK_LOGINS = st.lists(
    st.one_of(_BLANK, st.builds("{}:{}".format, _BLANK, _BLANK)), min_size=1, max_size=4
)


def half_blank_logins(entries: list[str | None]) -> list[str]:
    """A configured user (or password) with a blank other half: ``admin:``, ``:s3cret``."""
    halves = {h for e in entries if isinstance(e, str) for h in e.partition(":")[::2]}
    return [login for h in sorted(halves) for login in (f"{h}:", f"{h}: ", f":{h}", f"\t:{h}")]


# The three trailing commas: refused before Flower is asked anything.
@example(config=(["--address=0.0.0.0", "--basic-auth=admin:s3cret,"], {}, None, ""), blanks=[""])
@example(
    config=(["--address=0.0.0.0"], {"FLOWER_BASIC_AUTH": "admin:s3cret,"}, None, ""), blanks=[""]
)
@example(config=(["--address=0.0.0.0"], {}, None, "admin:long-enough,"), blanks=[""])
@example(config=([], {}, "basic_auth = ['admin:s3cret', '']\n", ""), blanks=[""])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=configurations(), blanks=_BLANK_LOGINS)
def test_every_accepted_configuration_refuses_empty_and_blank_logins(
    resolver: FlowerResolver,
    case_dir: Path,
    config: tuple[list[str], dict[str, str], str | None, str],
    blanks: list[str],
) -> None:
    args, env, file_text, login = config
    try:  # what `callpass flower` does with CALLPASS_FLOWER_BASIC_AUTH
        checked = load_settings({"CALLPASS_FLOWER_BASIC_AUTH": login}).flower_basic_auth
    except SettingsError:
        event("refused by the settings check")
        return  # refused: `callpass flower` stops with a configuration error
    env = {**env, **login_variables(env, checked.get_secret_value())}
    conf = case_dir / "flowerconfig.py"
    conf.unlink(missing_ok=True)
    if file_text is not None:
        conf.write_text(file_text)

    theirs = resolver.resolve(args, env, case_dir)
    namespace = read_flower_config(args, env, cwd=str(case_dir))
    if "error" not in theirs:  # the guard reads the list exactly as Flower does, kept or not
        assert list(effective_options(args, env, namespace).basic_auth) == list(
            theirs["basic_auth"] or []
        )
    if check_flower_options(args, env, namespace) is not None or "error" in theirs:
        event("refused by the guard" if "error" not in theirs else "Flower would not start")
        return  # refused by the guard, or Flower itself will not start

    entries: list[str | None] | None = theirs["basic_auth"]
    if not entries and not theirs["auth"]:
        # No login asked at all: allowed only where nobody else can reach Flower.
        assert theirs["unix_socket"] or is_loopback(theirs["address"]), theirs
        event("accepted without a login (loopback or a socket)")
        return
    event("accepted with " + ("basic auth" if entries else "--auth only"))
    for credential in ["", *blanks, *half_blank_logins(entries or [])]:
        assert not flower_admits(entries, theirs["auth"], basic(credential)), (credential, theirs)
    if entries and not theirs["auth"]:  # and the harness is not vacuous: a real login gets in
        first = entries[0]
        assert isinstance(first, str) and flower_admits(entries, "", basic(first))


# --- Flower's comparison, as the guard models it ------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "login", "admitted"),
    [
        (["admin:s3cret", ""], "", True),  # the bypass: a trailing comma
        ([""], "", True),
        (["admin:s3cret"], "", False),
        (["admin:"], "admin:", True),
        (["admin:s3cret"], "admin:s3cret", True),
        (["admin:s3cret"], "admin", False),
        (None, "", True),  # no basic auth: everyone
        ([], "", True),
    ],
)
def test_flower_admits_a_login_equal_to_any_entry(
    entries: list[str | None] | None, login: str, admitted: bool
) -> None:
    assert flower_admits(entries, "", basic(login)) is admitted
