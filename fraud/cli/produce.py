"""`fraud produce` (being written)."""

def produce() -> None:
    """Not implemented yet."""
    raise NotImplementedError
