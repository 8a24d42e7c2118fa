"""``ml_assets.testing.wait_until``: the one way the tests and benches wait for something."""

from __future__ import annotations

import itertools
import time

import polars as pl
import pytest

from ml_assets.testing import wait_until


def test_returns_the_first_value_that_is_not_none_or_false() -> None:
    calls = itertools.count(1)
    assert wait_until(lambda: next(calls) >= 3 or None, 5, interval=0.001) is True
    assert next(calls) == 4  # called exactly three times
    frames = iter([None, pl.DataFrame({"a": [1]})])  # a frame has no truth value
    assert wait_until(lambda: next(frames), 5, interval=0.001).height == 1
    assert wait_until(lambda: 0, 5) == 0  # zero is an answer, not "not yet"


def test_times_out_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="the moon"):
        wait_until(lambda: False, 0.2, interval=0.01, what=lambda: "the moon")
    assert 0.2 <= time.monotonic() - started < 5


def test_an_error_in_the_condition_stops_the_wait_at_once() -> None:
    def exited() -> bool:
        raise RuntimeError("server exited")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="server exited"):
        wait_until(exited, 60)
    assert time.monotonic() - started < 5
