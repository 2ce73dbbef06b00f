"""What sits between the broker and our tasks: the hardened Redis transport, socket bounds,
and the consumer that answers messages Celery cannot read."""
