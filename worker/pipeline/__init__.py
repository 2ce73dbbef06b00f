"""The life of one verification request, one part per concern (see :mod:`worker.pipeline.core`)."""
