"""Logging for the worker and the CLI: one handler, numbers masked on every line."""

from __future__ import annotations

import logging
import sys

from worker.masking import MaskingFilter

__all__ = ["configure_logging"]

FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str | int = "INFO") -> None:
    """Replace the root handlers with one masked stderr handler (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(MaskingFilter())
    root.addHandler(handler)
    root.setLevel(level)
