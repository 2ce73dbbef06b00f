"""What the ``callpass`` command shows a person: a call as it rings, a batch as it goes."""

__all__: list[str] = []
