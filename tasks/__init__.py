"""Celery tasks of callpass-worker: thin wrappers over :mod:`worker.pipeline` and
:mod:`worker.webhooks`, declared on an app by ``create_app`` (``worker/celery_app.py``)."""

from tasks.calls import register_call_tasks
from tasks.webhooks import register_webhook_tasks

__all__ = ["register_call_tasks", "register_webhook_tasks"]
