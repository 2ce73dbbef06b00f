"""One worker process: the pipeline wired to Celery and Redis, built once per process, and
the handlers of Celery's worker signals."""
