"""The states producers read through ``AsyncResult(<start_call task id>)``, written in Celery's
own format to its Redis result backend, one script per write.

Celery's ``store_result`` reads the stored state, then writes and publishes in a second round
trip: two trips per write, and a ``PLACED`` that races past a ``SUCCESS`` between the two can
bury the outcome. The script does the same check and write at once: as with Celery, an outcome
once stored is never replaced (not by PLACED info, not by another outcome).
"""

from __future__ import annotations

import json
from typing import Any

from celery import Celery
from redis.commands.core import Script

from callpass_producer.contracts.names import PLACED
from worker.pipeline import ResultSink

__all__ = ["CeleryResultSink"]

# KEYS[1] the task's meta key; ARGV: the encoded meta, its time to live (s, 0: none).
# Writes unless an outcome (SUCCESS) is stored; publishes what it wrote, as Celery does, for
# producers waiting on the key's channel. Returns 1 written, 0 kept (nothing to do).
_STORE_UNLESS_SETTLED = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class CeleryResultSink(ResultSink):
    """Writes ``PLACED`` info and outcomes where ``AsyncResult`` reads them."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._script: Script | None = None

    def publish_placed(self, task_id: str, meta: dict[str, Any]) -> None:
        self._store(task_id, meta, PLACED)

    def publish_outcome(self, task_id: str, doc: dict[str, Any]) -> None:
        self._store(task_id, doc, "SUCCESS")

    def read_placed(self, task_id: str) -> dict[str, Any] | None:
        if not task_id:
            return None
        backend: Any = self._app.backend
        # Only our JSON documents are stored under a start_call's id (the settings allow no
        # other serialiser and no compression): read it as that, without Celery's per-read
        # meta decoding. No retries, as with get_task_meta: a caller insists where it must.
        raw = backend.client.get(backend.get_key_for_task(task_id))
        try:
            meta = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(meta, dict):
            return None
        info = meta.get("result")
        if meta.get("status") in (PLACED, "SUCCESS") and isinstance(info, dict):
            return dict(info)
        return None

    def _store(self, task_id: str, result: dict[str, Any], state: str) -> None:
        backend: Any = self._app.backend  # Celery's RedisBackend (the settings allow no other)
        meta = backend._get_result_meta(result=result, state=state, traceback=None, request=None)
        meta["task_id"] = task_id
        args = [backend.encode(meta), int(backend.expires or 0)]
        key = backend.get_key_for_task(task_id)
        # Celery's own retry policy for connection errors, as its store_result has.
        backend.ensure(self._run, (backend.client, key, args))

    def _run(self, client: Any, key: bytes, args: list[Any]) -> Any:
        # One script object for every thread: Celery gives each thread a backend (and client)
        # of its own, and a script runs on whichever client it is handed.
        script = self._script
        if script is None:
            script = self._script = client.register_script(_STORE_UNLESS_SETTLED)
        return script(keys=[key], args=args, client=client)
