"""Refuse to start a Flower that anyone could get into without a password.

Flower shows every task's arguments, results and tracebacks, and its API revokes tasks and
shuts workers down. Its default address is ``''`` (every interface) and it asks for no login
unless told to. Every way we start Flower runs :func:`check_flower_args` first and stops with
the message it returns, before Flower binds its port (``worker/flower/entry.py``).

Two rules, on the options as Flower resolves them (``worker/flower/options.py``):

1. A ``--basic-auth`` list (from the command line, ``FLOWER_BASIC_AUTH`` or the config file)
   must be sound wherever Flower listens, loopback included. Flower
   (``flower/views/__init__.py``, ``BaseHandler.get_current_user``) base64-decodes the
   header's credentials and lets the request in when they equal *any* entry, whole
   (``hmac.compare_digest``). So an empty entry (``admin:pw,`` is ``['admin:pw', '']``) lets
   in ``Authorization: Basic =``, which decodes to an empty string; ``guest:`` lets in anyone
   who guesses ``guest``. Every entry must be a string of ASCII characters (Flower raises on
   others) in the form ``user:password``, neither side blank. Then no login that is empty,
   blank, or blank on either side of its first ``:`` equals an entry.
2. Beyond loopback Flower needs a login: a sound ``--basic-auth`` or ``--auth`` (the e-mail
   pattern the OAuth login checks; without a provider nobody gets in, which is closed too).
   ``--auth-provider`` and ``--oauth2-*`` protect nothing without ``--auth``, so they do not
   count. A Unix socket (``--unix-socket``) is not a network listener: allowed.

Never quotes a password: entries are named by their position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.addresses import is_loopback
from worker.flower.options import effective_options, flower_arguments, read_flower_config

__all__ = [
    "basic_auth_problem",
    "check_flower_args",
    "check_flower_binding",
    "check_flower_options",
    "check_flower_process",
    "is_loopback",
]


def _entry_problem(position: int, entry: str | None) -> str | None:
    if not isinstance(entry, str):
        return f"entry #{position} that is not a string"
    if not entry:
        return f"entry #{position} empty (a trailing or doubled comma makes one)"
    if not entry.isascii():
        return f"entry #{position} with characters other than ASCII (Flower cannot compare them)"
    user, colon, password = entry.partition(":")
    if not colon:
        return f"entry #{position} not in the form user:password"
    if not user.strip():
        return f"entry #{position} with a blank user name"
    if not password.strip():
        return f"entry #{position} that lets user {user!r} in without a password"
    return None


def basic_auth_problem(entries: Sequence[str | None]) -> str | None:
    """Why Flower would let a login with no password through these entries (``None``: it
    would not). No entries is no basic auth at all: not a problem here (rule 2 decides)."""
    for position, entry in enumerate(entries, start=1):
        problem = _entry_problem(position, entry)
        if problem is not None:
            return problem
    return None


def check_flower_options(
    args: Sequence[str], environ: Mapping[str, str], config: Mapping[str, object] | None = None
) -> str | None:
    """Why Flower must not start with these arguments (after ``flower``), environment and
    config file namespace (``None``: no config file); ``None``: it may. Reads no file."""
    bare = [position for position, arg in enumerate(args, start=1) if not arg.startswith("-")]
    if bare:
        # Flower keeps a bare word that names any attribute of Tornado's options object
        # ("define", "items") and Tornado stops parsing there: every option after it would be
        # silently ignored, a login included. Flower takes no positional arguments.
        return (
            f"Flower's argument #{bare[0]} is not an option: Flower takes only --option=value "
            "arguments, and would ignore every option after a bare word (a login included)."
        )
    options = effective_options(args, environ, config)
    problem = basic_auth_problem(options.basic_auth)
    if problem is not None:
        return (
            f"Flower's basic auth (--basic-auth, FLOWER_BASIC_AUTH, CALLPASS_FLOWER_BASIC_AUTH "
            f"or the config file) has an {problem}: Flower lets in any login equal to an "
            "entry, so this one needs no password (an empty entry lets in the header "
            "'Authorization: Basic ='). Give every entry as user:password, neither blank."
        )
    if options.unix_socket or is_loopback(options.address) or options.auth or options.basic_auth:
        return None
    where = "every interface (address '')" if not options.address else repr(options.address)
    return (
        f"Flower would listen on {where} without authentication: anyone who reaches the port "
        "could read task arguments and results and control the workers. Bind it to loopback "
        "(--address=127.0.0.1) or set --basic-auth=user:password (or FLOWER_BASIC_AUTH, or "
        "--auth with an OAuth provider)."
    )


def check_flower_binding(
    argv: Sequence[str], environ: Mapping[str, str], config: Mapping[str, object] | None = None
) -> str | None:
    """:func:`check_flower_options` for a whole command line (``sys.argv``); ``None`` for a
    process that does not start Flower, or only prints its help."""
    args = flower_arguments(argv)
    if args is None or "--help" in args:  # not Flower, or Click prints the help and exits
        return None
    return check_flower_options(args, environ, config)


def check_flower_args(args: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """:func:`check_flower_options` for Flower's arguments, its config file read from disk."""
    try:
        config = read_flower_config(args, environ)
    except Exception as exc:  # Flower would stop on it too; refuse rather than guess
        conf = effective_options(args, environ).conf
        return f"cannot read Flower's config file {conf}: {type(exc).__name__}: {exc}"
    return check_flower_options(args, environ, config)


def check_flower_process(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """:func:`check_flower_args` for this process's command line (``sys.argv``)."""
    args = flower_arguments(argv)
    if args is None or "--help" in args:
        return None
    return check_flower_args(args, environ)
