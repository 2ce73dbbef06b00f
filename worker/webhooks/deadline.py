"""A total deadline for one webhook delivery attempt, kept even against a trickling receiver.

requests' time-outs are per socket operation: a receiver that sends one byte every 0.6 s
never trips a 1 s read time-out, and holds a worker thread for as long as it likes. So each
attempt runs inside :func:`attempt_deadline`. The guarded connections of
:mod:`worker.webhooks.guard` connect with at most the time left and hand every socket they use
to :meth:`AttemptDeadline.watch`; a watchdog thread shuts those sockets down when the deadline
passes, so the blocked read or write fails at once (for TLS too: the socket under it is shut).

The watchdog shuts down its own duplicate of each socket's descriptor (``shutdown`` acts on the
socket, not on one descriptor), so a descriptor that urllib3 closes and the kernel hands to
another connection meanwhile is never touched. Name resolution is not covered: it is the
system resolver's, with its own time-outs.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

__all__ = ["AttemptDeadline", "attempt_deadline", "current_deadline"]

#: The least time a socket operation is given, so a time-out is a time-out, not a busy loop.
_MIN_OPERATION_S = 0.01


class AttemptDeadline:
    """One attempt's deadline, on the monotonic clock; sockets watched until it ends."""

    def __init__(self, seconds: float, lock: threading.Condition) -> None:
        self.seconds = seconds
        self.ends_at = time.monotonic() + seconds
        self._lock = lock
        self._watched: dict[int, socket.socket] = {}  # by the watched socket's id
        self._over = False  # the attempt left attempt_deadline: nothing more to shut
        self.fired = False  # the watchdog shut the sockets down

    def remaining(self) -> float:
        return max(0.0, self.ends_at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.fired or time.monotonic() >= self.ends_at

    def bound(self, timeout: object) -> float:
        """A socket time-out of at most what is left (``timeout`` may be None or a sentinel)."""
        left = max(self.remaining(), _MIN_OPERATION_S)
        return min(timeout, left) if isinstance(timeout, int | float) else left

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it has passed)."""
        with self._lock:
            if self._over or id(sock) in self._watched:
                return
            try:
                duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except OSError:
                return  # already closed: nothing left to hold the thread
            self._watched[id(sock)] = duplicate
            if self.fired or time.monotonic() >= self.ends_at:
                self._shut(duplicate)

    def fire(self) -> None:
        """The watchdog's part: shut every watched socket down (caller holds the lock)."""
        if self._over:
            return
        self.fired = True
        for duplicate in self._watched.values():
            self._shut(duplicate)

    def end(self) -> None:
        with self._lock:
            self._over = True
            for duplicate in self._watched.values():
                duplicate.close()
            self._watched.clear()

    @staticmethod
    def _shut(duplicate: socket.socket) -> None:
        with suppress(OSError):  # the peer may have closed it already
            duplicate.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One thread per process that fires deadlines when they pass (started on first use)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Condition()
        self._heap: list[tuple[float, int, AttemptDeadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def new(self, seconds: float) -> AttemptDeadline:
        if self.pid != os.getpid():  # a forked child (prefork pool): the thread stayed behind
            with _FORK_LOCK:  # two first callers of a fresh child must not both reset
                if self.pid != os.getpid():
                    self._reset()
        with self.lock:
            deadline = AttemptDeadline(seconds, self.lock)
            heapq.heappush(self._heap, (deadline.ends_at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="callpass-webhook-deadlines", daemon=True
                )
                self._thread.start()
            self.lock.notify()
        return deadline

    def _run(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    heapq.heappop(self._heap)[2].fire()
                wait = self._heap[0][0] - now if self._heap else None
                self.lock.wait(wait)


_watchdog = _Watchdog()
# Taken only by the first callers in a forked child, never in the process that forks, so it
# is never held across a fork.
_FORK_LOCK = threading.Lock()
_local = threading.local()


def current_deadline() -> AttemptDeadline | None:
    """The deadline of the attempt this thread is making, if any."""
    deadline: AttemptDeadline | None = getattr(_local, "deadline", None)
    return deadline


@contextmanager
def attempt_deadline(seconds: float) -> Iterator[AttemptDeadline]:
    """Everything the guarded session does on this thread inside ends by ``seconds``."""
    deadline = _watchdog.new(seconds)
    previous = current_deadline()
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        _local.deadline = previous
        deadline.end()
