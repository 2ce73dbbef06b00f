"""The states producers read through ``AsyncResult(<start_call task id>)``, written in Celery's
own format to its Redis result backend, one script per write.

Celery's ``store_result`` reads the stored state, then writes and publishes in a second round
trip: two trips per write, and a ``PLACED`` that races past a ``SUCCESS`` between the two can
bury the outcome. The script does the same check and write at once: an outcome, once stored,
is never replaced by anything but another outcome (a republication of the same request).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from redis.commands.core import Script

from worker.contracts.names import PLACED
from worker.pipeline import ResultSink

__all__ = ["CeleryResultSink"]

# KEYS[1] the task's meta key; ARGV: the encoded meta, its time to live (s), its state.
# Writes unless an outcome (SUCCESS) is stored and this is not one; publishes what it wrote,
# as Celery does, for producers waiting on the key's channel. Returns 1 written, 0 kept.
_STORE_UNLESS_SETTLED = """
if ARGV[3] ~= 'SUCCESS' then
  local current = redis.call('GET', KEYS[1])
  if current then
    local ok, meta = pcall(cjson.decode, current)
    if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
  end
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
        self._script: tuple[Any, Script] | None = None

    def publish_placed(self, task_id: str, meta: dict[str, Any]) -> None:
        self._store(task_id, meta, PLACED)

    def publish_outcome(self, task_id: str, doc: dict[str, Any]) -> None:
        self._store(task_id, doc, "SUCCESS")

    def read_placed(self, task_id: str) -> dict[str, Any] | None:
        if not task_id:
            return None
        meta = self._app.backend.get_task_meta(task_id, cache=False)
        info = meta.get("result")
        if meta.get("status") in (PLACED, "SUCCESS") and isinstance(info, dict):
            return dict(info)
        return None

    def _store(self, task_id: str, result: dict[str, Any], state: str) -> bool:
        backend: Any = self._app.backend  # Celery's RedisBackend (the settings allow no other)
        meta = backend._get_result_meta(result=result, state=state, traceback=None, request=None)
        meta["task_id"] = task_id
        expires = int(backend.expires or 0)
        script = self._script_for(backend)
        key = backend.get_key_for_task(task_id)
        return bool(script(keys=[key], args=[backend.encode(meta), expires, state]))

    def _script_for(self, backend: Any) -> Script:
        # Registered on the backend's own client (its connection settings and pool), again
        # whenever Celery builds a new backend (it may, per thread).
        client = backend.client
        if self._script is None or self._script[0] is not client:
            self._script = (client, client.register_script(_STORE_UNLESS_SETTLED))
        return self._script[1]
