"""The marketplace app's management commands (``demo``, ``simulate``)."""
