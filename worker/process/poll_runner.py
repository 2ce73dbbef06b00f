"""The poll runner: each worker process runs the polls that fall due in Redis, on a few threads
of its own (see :mod:`worker.pipeline.due_polls`).

Polls are not Celery messages: a poll is one status request and one record update, and a
message around it (publish, fetch, acknowledge, the unacked bookkeeping of a countdown) would
cost more than the poll. They run beside the pool, never in its slots, and while starts wait
(in the broker's start queues, or filling this process's pool) they wait too, up to a bound,
so a burst of starts is placed first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from worker.backoff import capped_backoff_s
from worker.ops.logs import clear_log_context
from worker.pipeline.due_polls import DuePoll, DuePolls
from worker.pipeline.poller import HANDED_ON
from worker.pipeline.store import now

__all__ = ["PollRunner", "StartsInFlight"]

log = logging.getLogger(__name__)

#: Longest sleep with nothing due: polls another process added are seen this soon.
IDLE_S = 0.5
#: Pause while due polls yield to waiting starts.
YIELD_PAUSE_S = 0.05
#: Shortest look-again: polls falling due within it are taken together, in one round trip.
BATCH_S = 0.025
#: Before a poll that failed (Redis or the broker down, a bug) is tried again: doubling from
#: the first wait up to the last, so a poll that fails each time does not ask the API every 5 s.
RETRY_S = 5.0
RETRY_CAP_S = 300.0


class StartsInFlight:
    """How many starts this process runs now; a pool full of them means a burst."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def __enter__(self) -> None:
        with self._lock:
            self.count += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self.count -= 1


class PollRunner:
    """Takes due polls (leased for ``lease_s``) and runs each with ``run_poll``, which
    returns :data:`~worker.pipeline.poller.HANDED_ON` when the poll removed itself from the
    set as it handed the chain on (any other answer: the runner removes it)."""

    def __init__(
        self,
        due: DuePolls,
        run_poll: Callable[[str, str], str],
        *,
        concurrency: int,
        lease_s: float,
        yield_max_s: float,
        pool_saturated: Callable[[], bool] = lambda: False,
    ) -> None:
        self._due = due
        self._run_poll = run_poll
        self._concurrency = concurrency
        self._lease_s = lease_s
        self._yield_max_s = yield_max_s
        self._pool_saturated = pool_saturated
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="callpass-poll")
        self._slots = threading.Condition()
        self._running = 0
        self._wake = threading.Event()
        self._wake_at = 0.0
        self._stopping = False
        self._failures: dict[str, int] = {}  # member: failed runs in a row (this process)
        self._loop = threading.Thread(target=self._take_loop, name="callpass-polls", daemon=True)
        due.on_add(self._added)

    def start(self) -> None:
        self._loop.start()

    def stop_taking(self) -> None:
        """Take no more polls (a shutdown began: the others run them); returns at once."""
        self._stopping = True
        self._wake.set()
        with self._slots:
            self._slots.notify_all()

    def stop(self) -> None:
        """Take no more polls; wait for the running ones (each bounded by its time-outs)."""
        self.stop_taking()
        self._loop.join()
        self._executor.shutdown(wait=True)

    def _added(self, due_at: float) -> None:
        # A poll this process added, due before the loop would look again: look then.
        if due_at < self._wake_at:
            self._wake.set()

    def _free_slots(self) -> int:
        with self._slots:
            while self._running >= self._concurrency and not self._stopping:
                self._slots.wait()
            return self._concurrency - self._running

    def _take_loop(self) -> None:
        while not self._stopping:
            free = self._free_slots()
            if self._stopping:
                return
            self._wake.clear()
            if self._stopping:  # the stop's wake-up may have been cleared just now
                return
            self._wake_at = float("inf")  # a poll added while we look wakes the next wait
            try:
                pause = self._take(free)
            except Exception:  # Redis down, a bug: never end the loop
                log.warning("taking due polls failed; trying again in 1 s", exc_info=True)
                pause = 1.0
            self._wake_at = now() + pause
            if pause > 0:
                self._wake.wait(pause)
            self._wake_at = 0.0

    def _take(self, free: int) -> float:
        """Start up to ``free`` due polls; return how long to wait before looking again."""
        at = now()
        taken = self._due.take(
            at,
            at + self._lease_s,
            free,
            yield_until=at - self._yield_max_s,
            must_yield=self._pool_saturated(),
        )
        for poll in taken.polls:
            with self._slots:
                self._running += 1
            try:
                self._executor.submit(self._run, poll)
            except RuntimeError:  # the interpreter is shutting down: the leases bring them back
                with self._slots:
                    self._running -= 1
                self._stopping = True
                return 0.0
        if len(taken.polls) == free:
            # A backlog: look again once several slots are free, not at each one that frees
            # (one round trip per batch instead of one per poll).
            return BATCH_S
        if taken.yielding:
            return YIELD_PAUSE_S
        if taken.next_due is None:
            return IDLE_S
        return min(max(taken.next_due - now(), BATCH_S), IDLE_S)

    def _run(self, poll: DuePoll) -> None:
        try:
            clear_log_context()  # a runner thread runs one poll after another
            if self._run_poll(poll.request_id, poll.token) != HANDED_ON:
                self._due.done(poll)
            self._failures.pop(poll.member, None)
        except Exception:
            failures = self._failures.get(poll.member, 0)
            self._failures[poll.member] = failures + 1
            delay = capped_backoff_s(failures, RETRY_S, RETRY_CAP_S)
            log.warning(
                "poll of request %s failed; trying again in %.0f s",
                poll.request_id,
                delay,
                exc_info=True,
            )
            self._retry_later(poll, delay)
        finally:
            clear_log_context()
            with self._slots:
                self._running -= 1
                self._slots.notify_all()

    def _retry_later(self, poll: DuePoll, delay_s: float) -> None:
        try:
            self._due.add(poll, now() + delay_s)
        except Exception:  # Redis down: the lease ends and the poll falls due again
            log.debug("poll of request %s left to its lease", poll.request_id, exc_info=True)
