"""What producers, the worker and the docs share: task names and message shapes.

Importing this package pulls in nothing of the worker (no settings, no Redis, no Celery app),
so a producing service can use it on its own. ``schemas/*.json`` are generated from these
models (``make schemas``).
"""
