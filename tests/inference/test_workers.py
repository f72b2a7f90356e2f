"""``inference.workers.fork_map``: items shared with a forked child give the serial results."""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.synchronize import Barrier

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from inference.errors import InferenceError
from inference.workers import WORKERS_ENV, fork_map, worker_count


def _array(i: int) -> np.ndarray:
    return np.random.default_rng(i).normal(size=(50, 40)).astype(np.float32)


def test_results_are_the_serial_ones_in_item_order() -> None:
    serial = [_array(i) for i in range(7)]
    shared = fork_map(_array, 7, workers=2)
    assert len(shared) == 7
    for a, b in zip(serial, shared, strict=True):
        assert np.array_equal(a, b)


def test_both_processes_take_items() -> None:
    # items 0 and 1 each wait for the other at a two-party barrier: only two processes running
    # at once get past it (one process taking both would wait until the barrier breaks)
    barrier: Barrier = multiprocessing.get_context("fork").Barrier(2, timeout=60.0)
    parent = os.getpid()

    def meet(i: int) -> tuple[int, int]:
        barrier.wait()
        return i, os.getpid()

    out = fork_map(meet, 2, workers=2)
    assert [i for i, _ in out] == [0, 1]
    pids = {pid for _, pid in out}
    assert len(pids) == 2 and parent in pids


def _blas_threads() -> set[int]:
    return {int(lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_blas_runs_one_thread_in_each_process_while_two_work() -> None:
    barrier: Barrier = multiprocessing.get_context("fork").Barrier(2, timeout=60.0)

    def threads(i: int) -> tuple[int, set[int]]:
        barrier.wait()  # both processes hold an item (see above)
        return os.getpid(), _blas_threads()

    with threadpool_limits(limits=2, user_api="blas"):
        out = fork_map(threads, 2, workers=2)
        assert len({pid for pid, _ in out}) == 2
        assert all(seen == {1} for _, seen in out)
        assert _blas_threads() == {2}  # given back after the map


def test_an_item_the_child_fails_on_is_computed_here() -> None:
    parent = os.getpid()

    def only_here(i: int) -> tuple[int, int]:
        if os.getpid() != parent:
            raise RuntimeError("the child cannot do this item")
        return i, i * i

    assert fork_map(only_here, 5, workers=2) == [(i, i * i) for i in range(5)]


def test_a_child_that_hangs_is_given_up_and_its_items_computed_here(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parent = os.getpid()

    def hangs_in_child(i: int) -> int:
        if os.getpid() != parent:
            time.sleep(3600)  # as a child stuck on a lock held at the fork would
        time.sleep(0.3)  # leaves the child time to take an item
        return i * 2

    assert fork_map(hangs_in_child, 4, workers=2, child_wait_min_s=1.0) == [0, 2, 4, 6]
    assert "no results from the child" in caplog.text


def test_an_error_is_raised_here_as_in_a_serial_run() -> None:
    def bad(i: int) -> int:
        if i == 3:
            raise InferenceError("item 3 has no answer", i)
        return i

    with pytest.raises(InferenceError, match="item 3"):
        fork_map(bad, 6, workers=2)


def test_one_worker_runs_serially_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, "1")
    assert worker_count() == 1
    assert fork_map(lambda i: os.getpid(), 4) == [os.getpid()] * 4
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert worker_count() == 2
