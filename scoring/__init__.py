"""The streaming scorer, model clients, the alerts database and the analyst tools."""
