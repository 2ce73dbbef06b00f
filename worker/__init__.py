"""callpass-worker: flash-call phone verification on Celery (everything that is not a task)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
