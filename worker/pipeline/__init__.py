"""The life of one verification request: claim, dial once, poll, settle exactly once.

The facade is :class:`worker.pipeline.core.Pipeline`; this package's own import is light (the
protocols only), so a producer importing :mod:`worker.pipeline.outbox` pulls in nothing else.
"""

from worker.pipeline.ports import Dispatcher, ResultSink

__all__ = ["Dispatcher", "ResultSink"]
