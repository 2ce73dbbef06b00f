"""How Flower resolves the options that decide who can reach it: a model of Flower 2.2.

Flower 2.x (``flower/command.py``) takes its options from, lowest precedence first:

1. ``FLOWER_<OPTION>`` environment variables (suffix case-insensitive; lists comma-separated);
2. the config file, Python code run in a fresh namespace (``--conf``, default
   ``flowerconfig.py`` in the working directory; a missing default file is skipped);
3. the command line after ``flower``: ``--option=value`` only (Tornado's parser; a value in
   the next argument is not read), parsing stops at the first non-option argument.

:func:`effective_options` resolves them the same way from the arguments, the environment and
the config file's namespace, and reads no file. Lists (``basic_auth``) are split on every
comma with nothing stripped, as Tornado and Flower split them: ``admin:pw,`` is two entries,
the second one empty. ``tests/test_flower_guard.py`` compares this with the installed Flower.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "FLOWER_OPTION_NAMES",
    "FlowerOptions",
    "effective_options",
    "flower_arguments",
    "is_flower_command",
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
    #: Every entry Flower compares a login with, in its order (``None``: an entry a config
    #: file list gave as ``None``, which Tornado keeps).
    basic_auth: tuple[str | None, ...] = ()
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
            # Kept as they are; an item that is not a string (Flower refuses any but None)
            # is modelled as None, which the guard refuses.
            return replace(
                options, basic_auth=tuple(v if isinstance(v, str) else None for v in value)
            )
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
