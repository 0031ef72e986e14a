"""`fraud simulate` (being written)."""

def simulate() -> None:
    """Not implemented yet."""
    raise NotImplementedError
