"""The simulator's tests run inside a test transaction, where ``on_commit`` callbacks never fire.

A build publishes its pointer on commit: without this, every simulated build
after an arm's first would be built and never served (the simulation would
serve each arm's first lists for two weeks). Running the callbacks at once is
what each of the simulator's committed steps does outside a test.
"""

import pytest
from django.db import transaction


@pytest.fixture(autouse=True)
def on_commit_at_once(monkeypatch):
    def at_once(func, using=None, robust=False):
        func()

    monkeypatch.setattr(transaction, "on_commit", at_once)
