"""config.memo: one load per version, reloaded when the version moves or the copy is too old."""

import threading

import pytest

from config import memo as memo_module
from config.memo import VersionedMemo


class Loads:
    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1
        return f"value {self.count}"


def test_one_load_per_version():
    memo, load = VersionedMemo(), Loads()
    assert memo.get("v1", load) == "value 1"
    assert memo.get("v1", load) == "value 1"
    assert load.count == 1
    assert memo.get("v2", load) == "value 2"
    assert memo.get("v1", load) == "value 3"  # only the last version is held
    assert load.count == 3


def test_forget_makes_the_next_read_load():
    memo, load = VersionedMemo(), Loads()
    memo.get("v1", load)
    memo.forget()
    assert memo.get("v1", load) == "value 2"


def test_a_copy_older_than_max_age_is_reloaded_even_under_the_same_version(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(memo_module.time, "monotonic", lambda: clock[0])
    memo, load = VersionedMemo(max_age_seconds=60), Loads()
    assert memo.get(None, load) == "value 1"
    clock[0] += 59.9
    assert memo.get(None, load) == "value 1"
    clock[0] += 0.2
    assert memo.get(None, load) == "value 2"
    clock[0] += 1000  # no max age: held until the version moves
    plain = VersionedMemo()
    plain.get("v", load)
    clock[0] += 10**6
    assert plain.get("v", load) == "value 3" and load.count == 3


def test_the_last_value_stays_readable_when_a_reload_fails():
    memo, load = VersionedMemo(), Loads()
    assert memo.last is None
    memo.get("v1", load)

    def broken():
        raise RuntimeError("the database is down")

    with pytest.raises(RuntimeError):
        memo.get("v2", broken)
    assert memo.last == "value 1"
    assert memo.get("v1", load) == "value 1"  # the failed reload replaced nothing
    memo.forget()
    assert memo.last is None


def test_held_as_chooses_the_version_after_the_load():
    memo, load, order = VersionedMemo(), Loads(), []

    def loading():
        order.append("load")
        return load()

    def held_as(version):
        order.append(f"held_as {version}")
        return "minted" if version is None else version

    assert memo.get(None, loading, held_as=held_as) == "value 1"
    assert order == ["load", "held_as None"]
    assert memo.get("minted", loading) == "value 1"  # held under the minted version
    assert memo.get(None, loading, held_as=held_as) == "value 2"  # None is not what is held


def test_concurrent_readers_of_a_held_version_share_one_copy():
    memo, load = VersionedMemo(), Loads()
    memo.get("v", load)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(memo.get("v", load))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == ["value 1"] * 8 and load.count == 1
