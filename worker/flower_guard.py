"""Refuse to start Flower beyond loopback without authentication.

Flower shows every task's arguments, results and tracebacks, and its API revokes tasks and
shuts workers down. Its default address is ``''`` (every interface) and it asks for no login
unless told to. ``worker.celery_app`` runs :func:`check_flower_process` when the process is
``celery -A worker.celery_app flower …`` and stops with the message it returns, before Flower
binds its port.

Flower 2.x (``flower/command.py``) takes its options from, lowest precedence first:

1. ``FLOWER_<OPTION>`` environment variables (suffix case-insensitive; lists comma-separated);
2. the config file, Python code run in a fresh namespace (``--conf``, default
   ``flowerconfig.py`` in the working directory; a missing default file is skipped);
3. the command line after ``flower``: ``--option=value`` only (Tornado's parser; a value in
   the next argument is not read), parsing stops at the first non-option argument.

:func:`check_flower_binding` resolves them the same way from the command line, the
environment and the config file's namespace, and reads no file: a pure function.

What counts as authentication: ``--basic-auth`` with ``user:password`` entries (every entry
with a password: an entry ``guest:`` lets anyone who guesses ``guest`` in), or ``--auth`` (the
e-mail pattern the OAuth login checks; without a provider nobody gets in, which is closed too).
``--auth-provider`` and ``--oauth2-*`` protect nothing without ``--auth``, so they do not count.
A Unix socket (``--unix-socket``) is not a network listener: allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

__all__ = [
    "FlowerOptions",
    "check_flower_binding",
    "check_flower_process",
    "effective_options",
    "flower_arguments",
    "is_flower_command",
    "is_loopback",
    "read_flower_config",
]

#: Every option Flower 2.2 accepts (its own and Tornado's logging options), as Tornado
#: normalises them. Flower drops other arguments before parsing, which matters for where
#: parsing stops (a test compares this with the installed Flower).
FLOWER_OPTION_NAMES = frozenset(
    {
        "address",
        "auth",
        "auth-provider",
        "auto-refresh",
        "basic-auth",
        "broker-api",
        "ca-certs",
        "certfile",
        "conf",
        "cookie-secret",
        "db",
        "debug",
        "enable-events",
        "format-task",
        "help",
        "inspect-timeout",
        "keyfile",
        "log-file-max-size",
        "log-file-num-backups",
        "log-file-prefix",
        "log-rotate-interval",
        "log-rotate-mode",
        "log-rotate-when",
        "log-to-stderr",
        "logging",
        "max-tasks",
        "max-workers",
        "natural-time",
        "oauth2-key",
        "oauth2-redirect-uri",
        "oauth2-secret",
        "persistent",
        "port",
        "purge-offline-workers",
        "read-only",
        "state-save-interval",
        "task-runtime-metric-buckets",
        "tasks-columns",
        "unix-socket",
        "url-prefix",
        "xheaders",
    }
)
#: The options that decide who can reach Flower; the others are left to Flower.
_TRACKED = frozenset({"address", "unix-socket", "basic-auth", "auth", "conf"})
DEFAULT_CONFIG_FILE = "flowerconfig.py"
ENV_PREFIX = "FLOWER_"

# Celery's global options (celery/bin/celery.py) that take a value, long and short.
_CELERY_VALUE_OPTIONS = frozenset(
    {"-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"}
)
_CELERY_SHORT_VALUE_LETTERS = frozenset("Ab")
# `celery …`, `python -m celery …` and `python -m flower …` (flower/__main__.py runs celery).
_PROGRAMS = frozenset({"celery", "flower"})


@dataclass(frozen=True)
class FlowerOptions:
    """The options that decide who can reach a Flower, as Flower will see them."""

    address: str = ""
    unix_socket: str = ""
    basic_auth: tuple[str, ...] = ()
    auth: str = ""
    conf: str = DEFAULT_CONFIG_FILE


def _is_celery_program(program: str) -> bool:
    *parents, name = re.split(r"[\\/]", program)  # POSIX or Windows paths
    name = name.lower().removesuffix(".exe")
    if name in _PROGRAMS:
        return True
    return name == "__main__.py" and bool(parents) and parents[-1] in _PROGRAMS


def flower_arguments(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``flower`` when ``argv`` runs ``celery [global options] flower``.

    ``None`` for any other process (a worker, ``pytest -k flower``, ``celery … worker -n
    flower``): the subcommand is the first argument Celery's global options do not consume.
    """
    if not argv or not _is_celery_program(argv[0]):
        return None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg.startswith("--"):
            i += 2 if arg in _CELERY_VALUE_OPTIONS else 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            # A cluster of short options (-C, -q, -A app, -Aapp, -qA app): a value letter takes
            # the rest of the cluster, or the next argument when it ends the cluster.
            step = 1
            for pos, letter in enumerate(arg[1:], start=1):
                if letter in _CELERY_SHORT_VALUE_LETTERS:
                    step = 2 if pos == len(arg) - 1 else 1
                    break
            i += step
            continue
        break
    if i < len(argv) and argv[i] == "flower":
        return list(argv[i + 1 :])
    return None


def is_flower_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (``sys.argv``) starts Flower."""
    return flower_arguments(argv) is not None


def _normalize(name: str) -> str:
    return name.replace("_", "-")


def _with_value(options: FlowerOptions, name: str, value: object) -> FlowerOptions:
    """``options`` with ``name`` set as Tornado sets it (strings parsed, lists kept)."""
    if name == "basic-auth":
        if isinstance(value, str):
            return replace(options, basic_auth=tuple(value.split(",")))
        if isinstance(value, list | tuple):
            return replace(options, basic_auth=tuple(str(v) for v in value))
        # None (or a wrong type, which Flower refuses anyway): no credentials.
        return replace(options, basic_auth=())
    # address, unix-socket, auth, conf are strings. None in a config file means the default
    # behaviour (every interface, no socket, no auth); other types make Flower fail.
    text = "" if value is None else value if isinstance(value, str) else repr(value)
    if name == "address":
        return replace(options, address=text)
    if name == "unix-socket":
        return replace(options, unix_socket=text)
    if name == "auth":
        return replace(options, auth=text)
    return replace(options, conf=text)


def _apply_command_line(options: FlowerOptions, args: Sequence[str]) -> FlowerOptions:
    # flower.command.apply_options: keep the arguments that name an option, then Tornado's
    # parse_command_line, which stops at the first one not starting with "-".
    kept = [a for a in args if _normalize(a.lstrip("-").partition("=")[0]) in FLOWER_OPTION_NAMES]
    for arg in kept:
        if not arg.startswith("-"):
            break
        name, equals, value = arg.lstrip("-").partition("=")
        name = _normalize(name)
        # Without "=" a string option is an error that stops Flower: nothing to apply.
        if name in _TRACKED and equals:
            options = _with_value(options, name, value)
    return options


def effective_options(
    args: Sequence[str], environ: Mapping[str, str], config: Mapping[str, object] | None = None
) -> FlowerOptions:
    """The options Flower resolves from its arguments (after ``flower``), the environment and
    the config file's namespace (``None``: no config file)."""
    options = FlowerOptions()
    for key, value in environ.items():  # flower.command.apply_env_options
        if key.startswith(ENV_PREFIX):
            name = _normalize(key[len(ENV_PREFIX) :].lower())
            if name in _TRACKED:
                options = _with_value(options, name, value)
    options = _apply_command_line(options, args)  # first pass: finds --conf
    if config:
        for key, setting in config.items():  # tornado's parse_config_file
            name = _normalize(key)
            if name in _TRACKED:
                options = _with_value(options, name, setting)
        options = _apply_command_line(options, args)  # the command line wins
    return options


def is_loopback(address: str) -> bool:
    """Whether binding ``address`` listens on loopback only (``''`` is every interface)."""
    if address.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # empty, a host name (resolves anywhere) or something Flower cannot bind
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _basic_auth_problem(entries: Sequence[str]) -> str | None:
    """Why these ``--basic-auth`` entries do not protect Flower (``None``: they do).

    Never quotes a password: an entry without ``:`` is named by its position only.
    """
    real = [(n, e) for n, e in enumerate(entries, start=1) if e]
    if not real:
        return "without authentication"
    for position, entry in real:
        user, colon, password = entry.partition(":")
        if not colon:
            return f"with basic auth entry #{position} not in the form user:password"
        if not password:
            return f"with basic auth that lets user {user!r} in without a password"
    return None


def check_flower_binding(
    argv: Sequence[str], environ: Mapping[str, str], config: Mapping[str, object] | None = None
) -> str | None:
    """Why Flower must not start with this command line and environment (``None``: it may).

    ``argv`` is the whole command line (``sys.argv``); ``config`` is the namespace of Flower's
    config file after running it (``None``: no config file). Returns a message when Flower
    would listen beyond loopback without authentication.
    """
    args = flower_arguments(argv)
    if args is None or "--help" in args:  # not Flower, or Click prints the help and exits
        return None
    options = effective_options(args, environ, config)
    if options.unix_socket or is_loopback(options.address):
        return None
    if options.auth:
        return None
    problem = _basic_auth_problem(options.basic_auth)
    if problem is None:
        return None
    where = "every interface (address '')" if not options.address else repr(options.address)
    return (
        f"Flower would listen on {where} {problem}: anyone who reaches the port could read "
        "task arguments and results and control the workers. Bind it to loopback "
        "(--address=127.0.0.1) or set --basic-auth=user:password (or FLOWER_BASIC_AUTH, or "
        "--auth with an OAuth provider)."
    )


def read_flower_config(
    args: Sequence[str], environ: Mapping[str, str], cwd: str | None = None
) -> dict[str, object] | None:
    """The namespace of the config file Flower will read (``None``: no such file).

    The file is ``--conf`` (or ``FLOWER_CONF``, else ``flowerconfig.py``) relative to the
    working directory, run as Tornado's ``parse_config_file`` runs it. Flower runs the same
    file right after: it is the operator's own configuration. Errors in it propagate.
    """
    conf = effective_options(args, environ).conf
    path = os.path.abspath(os.path.join(cwd or os.getcwd(), conf))
    if not os.path.exists(path):
        # A missing default file is skipped, as Flower does; a missing --conf stops Flower.
        return None
    with open(path, "rb") as f:
        source = f.read().decode("utf-8")
    namespace: dict[str, object] = {"__file__": path}
    exec(compile(source, path, "exec"), namespace)  # noqa: S102 - Flower's own semantics
    namespace.pop("__builtins__", None)
    return namespace


def check_flower_process(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """:func:`check_flower_binding` for this process, its config file read from disk."""
    args = flower_arguments(argv)
    if args is None:
        return None
    try:
        config = read_flower_config(args, environ)
    except Exception as exc:  # Flower would stop on it too; refuse rather than guess
        conf = effective_options(args, environ).conf
        return f"cannot read Flower's config file {conf}: {type(exc).__name__}: {exc}"
    return check_flower_binding(argv, environ, config)
