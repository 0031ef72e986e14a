"""Cross-cutting pieces of the fraud system: the ``fraud`` command line and its errors."""
