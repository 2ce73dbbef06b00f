"""What producers, the worker and the docs share: task names and message shapes.

Importing this package pulls in nothing of the worker (no settings, no Redis, no Celery app),
so a producing service can use it on its own. ``schemas/*.json`` are generated from these
models (``make schemas``, :mod:`worker.schemas`)::

    names       task names, the PLACED state, queue defaults
    start_call  the start_call arguments, each rule beside its field
    placed      the PLACED info (also the data of call.placed)
    outcome     the outcome document (also the data of call.completed)
    events      the webhook events call.placed and call.completed
    verify      the verify_code answer
    next_step   what a product does next, by outcome (version-2 documents)
"""
