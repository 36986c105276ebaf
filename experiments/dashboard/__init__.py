"""The experiment owners' dashboard: results pages, exports and "recompute now" (login and permission required)."""
