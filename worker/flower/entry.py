"""Flower, always guarded: ``callpass flower`` and a hook on Flower's own command.

``callpass flower [Flower's options]`` is the supported way to start Flower. It takes the login
from ``CALLPASS_FLOWER_BASIC_AUTH`` (unless ``FLOWER_BASIC_AUTH`` is set), runs the guard
(``worker/flower/guard.py``) and only then runs Celery's CLI in this process on
``worker.celery_app:flower_app``: our app without the result backend, so Flower's result API
cannot show pins.

Flower started another way through Celery's command line (``celery -A worker.celery_app
flower``, ``celery --broker=… flower`` without ``-A``, ``celery -A other.app flower``,
``python -m flower``) is guarded too. This package declares a ``celery.commands`` entry point
named ``flower`` (``pyproject.toml``); Celery's CLI loads every such entry point when it starts
(click-plugins), Flower's own among them, and loading ours wraps the callback of Flower's click
command. It is one object whichever entry point Celery registers last, so the guard runs on
exactly the arguments Flower receives, before Flower binds, and drops whatever result backend
the app has. Where the app is ``worker.celery_app``'s, Flower gets the login from our settings
as with ``callpass flower``. Not guarded: code that runs Flower without Celery's CLI
(``flower.command.flower.main()`` or ``flower.app.Flower`` from Python), and a Python where
this package is not installed (entry points come from installed metadata, not ``PYTHONPATH``).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import click

from worker.flower.guard import check_flower_args

__all__ = [
    "CELERY_FLOWER",
    "drop_result_backend",
    "guard_flower_command",
    "login_variables",
    "refuse_unsafe_flower",
    "run_flower",
]

#: What ``callpass flower`` runs, followed by Flower's options.
CELERY_FLOWER = ("celery", "-A", "worker.celery_app:flower_app", "flower")
#: The entry point's attribute (``worker.flower.entry:guarded_flower``).
_ENTRY_POINT_ATTRIBUTE = "guarded_flower"
_GUARDED = "_callpass_guarded"


def login_variables(environ: Mapping[str, str], login: str) -> dict[str, str]:
    """The variables that hand Flower the login from our settings (``CALLPASS_FLOWER_BASIC_AUTH``,
    already validated): none when it is empty or Flower's own ``FLOWER_BASIC_AUTH`` is set."""
    if not login or "FLOWER_BASIC_AUTH" in environ:
        return {}
    return {"FLOWER_BASIC_AUTH": login}


def refuse_unsafe_flower(args: Sequence[str], environ: Mapping[str, str]) -> None:
    """Stop the process (exit status 1, the reason on stderr) when Flower must not start with
    these arguments (those after ``flower``) and this environment."""
    refusal = check_flower_args(args, environ)
    if refusal is not None:
        raise SystemExit("callpass: " + refusal)


def guard_flower_command(command: Any) -> Any:
    """``command`` (Flower's click command) with the guard run before its callback (once)."""
    callback = command.callback
    if getattr(callback, _GUARDED, False):
        return command

    @functools.wraps(callback)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        # Click's context (Flower's callback gets it from click.pass_context, not from its
        # caller): its obj holds the app Celery's CLI built.
        context = click.get_current_context(silent=True)
        app = getattr(getattr(context, "obj", None), "app", None)
        _hand_over_our_login(app)
        # Click hands Flower everything after `flower` as `tornado_argv`.
        refuse_unsafe_flower(list(kwargs.get("tornado_argv", ())), os.environ)
        if app is not None:  # whatever app or --result-backend it was given
            drop_result_backend(app)
        return callback(*args, **kwargs)

    setattr(guarded, _GUARDED, True)
    command.callback = guarded
    return command


def drop_result_backend(app: Any) -> None:
    """Flower needs events, not results: without a result backend its result API cannot show
    pins. Celery's ``--result-backend`` (``CELERY_RESULT_BACKEND``) wins over the app's
    ``result_backend`` setting, but not over the backend the app itself names."""
    app.conf.result_backend = None
    app.backend_cls = "disabled"
    # A backend read before this point stays cached (per app, or per thread when it is not
    # thread-safe): forget it everywhere, so every thread builds the disabled one.
    app._backend_cache = None
    app._local = threading.local()


def _hand_over_our_login(app: object) -> None:
    """Our settings' login for Flower, when ``app`` is ``worker.celery_app``'s (``celery -A
    worker.celery_app flower``): Flower reads its environment when its command runs."""
    from worker.celery_app import environment_settings

    settings = environment_settings(app)
    if settings is not None:
        login = settings.flower_basic_auth.get_secret_value()
        os.environ.update(login_variables(os.environ, login))


def __getattr__(name: str) -> Any:
    # Runs when Celery's CLI loads our entry point, not when this module is imported.
    if name == _ENTRY_POINT_ATTRIBUTE:
        from flower.command import flower

        return guard_flower_command(flower)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_flower(args: Sequence[str]) -> int:
    """``callpass flower [args]``: the guard, then Celery's CLI running Flower with our app."""
    from worker.settings import SettingsError, load_settings

    try:
        login = load_settings().flower_basic_auth.get_secret_value()
    except SettingsError as exc:
        print(f"callpass: configuration error: {exc}", file=sys.stderr)
        return 2
    os.environ.update(login_variables(os.environ, login))  # Flower reads it when it starts
    if "--help" not in args:  # Click prints Flower's help and exits before Flower starts
        refuse_unsafe_flower(args, os.environ)
    # Celery's CLI reads sys.argv; -A reads worker.celery_app's flower_app.
    sys.argv = [*CELERY_FLOWER, *args]
    from celery.bin.celery import main as celery_main

    return int(celery_main())
