"""Logging for the worker and the CLI: one handler, numbers masked on every line.

``CALLPASS_LOG_FORMAT=json`` writes one JSON object per line for log collectors; every line
written while a task runs carries its ``task_id`` and, once known, the ``request_id`` and
``callid`` (bound by the pipeline), so one request's life is one query. Text stays the default:
people read it (``make run``).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from worker.masking import MaskingFilter, mask_log_text

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "bind_log_context",
    "clear_log_context",
    "configure_logging",
]

FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
#: Fields a request's log lines carry, in this order.
CONTEXT_FIELDS = ("task_id", "request_id", "callid")

# Per thread under the threads pool, per greenlet under gevent: tasks never see each other's.
_context: ContextVar[dict[str, str] | None] = ContextVar("callpass_log_context", default=None)


def bind_log_context(**fields: str | None) -> None:
    """Add fields (``task_id``, ``request_id``, ``callid``) to this task's log lines."""
    _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v}})


def clear_log_context() -> None:
    _context.set(None)


class ContextFilter(logging.Filter):
    """Puts the bound fields on every record (``None`` outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _context.get() or {}
        for name in CONTEXT_FIELDS:
            setattr(record, name, bound.get(name))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": mask_log_text(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                # A producer may use the number as its request id (or task id).
                line[name] = mask_log_text(str(value))
        # The masking filter has formatted and masked the traceback; masked again in case a
        # record reaches this formatter some other way.
        if record.exc_info or record.exc_text:
            text = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
            line["exception"] = mask_log_text(text)
        if record.stack_info:
            line["stack"] = mask_log_text(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", fmt: str = "text") -> None:
    """Replace the root handlers with one masked stderr handler (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(FORMAT))
    handler.addFilter(MaskingFilter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
