"""Celery tasks of callpass-worker: thin wrappers over :mod:`worker.pipeline` and
:mod:`worker.webhooks`."""

from tasks.calls import poll_status, start_call, verify_code
from tasks.webhooks import deliver_webhook

__all__ = ["deliver_webhook", "poll_status", "start_call", "verify_code"]
