"""The terminal stage: the shared owner of terminal state in a scaled-out deployment."""
