"""Schemathesis hooks for tests/test_api_schema.py: the preconditions a schema cannot state.

Loaded by the schemathesis CLI (``SCHEMATHESIS_HOOKS``).
"""
