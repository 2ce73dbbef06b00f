"""Celery tasks of callpass-worker: thin wrappers over :mod:`worker.lifecycle`."""

from tasks.calls import poll_status, start_call, verify_code

__all__ = ["poll_status", "start_call", "verify_code"]
