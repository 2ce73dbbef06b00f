"""A product's own Celery app, as the suite and the chaos row run it: its SMS sender is the
fallback task callpass enqueues. Each run is written to a Redis list, so a run can be counted.

    PRODUCT_REDIS_URL=redis://... celery -A chaos.product_app worker -Q <queue>

The app is built on first use (``celery -A`` reads the module's ``app``), not at import.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import redis
from celery import Celery, Task

__all__ = ["RUNS_KEY", "TASK_NAME"]

#: Where each run of the task is listed (one JSON object per run).
RUNS_KEY = "product:fallback-runs"
TASK_NAME = "product.send_sms"


@functools.cache
def _app() -> Celery:
    url = os.environ["PRODUCT_REDIS_URL"]
    app = Celery("product", broker=url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    client = redis.Redis.from_url(url)

    @app.task(name=TASK_NAME, bind=True, acks_late=True)
    def send_sms(self: Task[Any, None], /, **kwargs: Any) -> None:
        client.rpush(RUNS_KEY, json.dumps({"task_id": self.request.id, **kwargs}))

    return app


def __getattr__(name: str) -> Celery:
    if name == "app":
        return _app()
    raise AttributeError(name)
