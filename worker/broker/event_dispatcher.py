"""Flower's task events, published without publisher confirms.

Celery's worker registers its event connection with the consumer's loop (so the broker's
heartbeats are read) and, under the threads pool, publishes task events from pool threads.
With ``confirm_publish`` (which the worker sets on RabbitMQ, so that a start it re-sends is
never lost), a pool thread waits for the broker's ack while holding the dispatcher's lock;
when the loop reads that ack first, the thread waits forever, and the loop and every other
thread then wait on the lock: the worker freezes (seen in ``make bench``'s RabbitMQ rows). An
event is monitoring data, a lost one costs a row in Flower and never a call: the event
connection does without confirms, so a publish never waits for a frame.
"""

from __future__ import annotations

from typing import Any

from celery.events.dispatcher import EventDispatcher

__all__ = ["UnconfirmedEventDispatcher"]


class UnconfirmedEventDispatcher(EventDispatcher):
    def __init__(self, connection: Any = None, *args: Any, **kwargs: Any) -> None:
        # Only a connection of the dispatcher's own (the worker's Events step passes no
        # channel): one lent with a channel (a producer pool's) keeps its confirms.
        own = kwargs.get("channel") is None and len(args) < 3
        options = getattr(connection, "transport_options", None)
        if own and options and "confirm_publish" in options:
            # A copy: the dict may be the app's broker_transport_options. It counts when the
            # connection is established again (after a broker restart).
            connection.transport_options = {
                k: v for k, v in options.items() if k != "confirm_publish"
            }
            if connection.connected:
                # Celery's worker hands over a connection it has established: its channels,
                # opened from here on (the producer's too), read this when they are made.
                connection.connection.confirm_publish = False
        super().__init__(connection, *args, **kwargs)
