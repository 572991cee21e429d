"""Pure logic of the Redis queue: hysteresis, stream ids, fingerprints (no Redis needed)."""

from __future__ import annotations

import pytest
import redis

from mindgap.queue import Backpressure, Queue, entry_order, hysteresis
from mindgap.queue.jobs import fingerprint
from mindgap.queue.keys import next_id
from mindgap.queue.scripts import Scripts, source


@pytest.mark.parametrize(("lag", "paused", "expected"), [
    (0, False, False), (10, False, False), (11, False, True),
    (11, True, True), (6, True, True), (5, True, False), (0, True, False),
])
def test_hysteresis(lag: int, paused: bool, expected: bool) -> None:
    assert hysteresis(lag, high_water=10, low_water=5, paused=paused) is expected


@pytest.mark.parametrize(("high", "low"), [(5, 6), (5, -1)])
def test_hysteresis_rejects_bad_marks(high: int, low: int) -> None:
    with pytest.raises(ValueError):
        hysteresis(0, high, low, False)


class FakeStream:
    def __init__(self, lags: list[int]) -> None:
        self.lags = lags
        self.calls = 0

    def lag(self) -> int:
        self.calls += 1
        return self.lags.pop(0)


def test_backpressure_keeps_state_and_rate_limits() -> None:
    fake = FakeStream([3, 9, 6, 4, 6])
    pressure = Backpressure(fake, high_water=8, low_water=4, interval_s=0.0)
    assert [pressure.check() for _ in range(5)] == [False, True, True, False, False]
    slow = Backpressure(FakeStream([9, 0]), high_water=8, low_water=4, interval_s=3600)
    assert slow.check() is True
    assert slow.check() is True  # not re-read within the interval
    assert slow.stream.calls == 1  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        Backpressure(fake, high_water=1, low_water=2)


def test_entry_order_and_next_id() -> None:
    assert entry_order("1700000000000-7") == (1700000000000, 7)
    assert next_id("1700000000000-7") == "1700000000000-8"
    assert next_id("0-0") == "0-1"
    assert sorted(["10-0", "9-5", "10-1"], key=entry_order) == ["9-5", "10-0", "10-1"]


def test_fingerprint_depends_on_ids_and_order() -> None:
    assert fingerprint(["a", "b"]) == fingerprint(["a", "b"])
    assert fingerprint(["a", "b"]) != fingerprint(["b", "a"])
    assert fingerprint(["ab"]) != fingerprint(["a", "b"])
    assert fingerprint([]).startswith("0:")


def test_queue_needs_decoded_responses_and_sane_settings() -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        Queue(redis.Redis(), create_groups=False)
    client = redis.Redis(decode_responses=True)
    with pytest.raises(ValueError):
        Queue(client, create_groups=False, visibility_timeout_ms=0)
    queue = Queue(client, "{mg}", create_groups=False)  # no connection made
    assert (queue.keys.tasks, queue.keys.job("x"), queue.keys.results("x")) == (
        "{mg}:tasks", "{mg}:job:x", "{mg}:results:x")


def test_every_script_ships_as_a_lua_file() -> None:
    from dataclasses import fields

    for field in fields(Scripts):
        text = source(field.name)
        assert "redis.call" in text, field.name
    assert source("complete").startswith(source("common"))  # settle() and now() in front
    assert "local function" not in source("touch")



def test_the_lua_files_are_package_data() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    assert "mindgap.queue" in setuptools["packages"]
    assert "lua/*.lua" in setuptools["package-data"]["mindgap.queue"]
