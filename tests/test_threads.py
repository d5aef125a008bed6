"""Thread policy: --threads and n_jobs resolved, workers in order under one intra-op thread;
nested caps restore the outer one, concurrent ones the setting found first."""

import subprocess
import sys
import threading

import pytest
import torch

from latent_sculpting.threads import (
    SCORING_THREADS_ENV,
    limit_threads,
    map_workers,
    resolve_n_jobs,
    resolve_threads,
    scoring_threads,
    single_thread_blas,
)

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def three_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(saved)


def test_nested_caps_restore_the_outer_one():
    with limit_threads(2):
        assert torch.get_num_threads() == 2
        with limit_threads(1, blas=False):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 3
    with limit_threads(None):
        assert torch.get_num_threads() == 3
    with pytest.raises(ValueError, match="at least 1"), limit_threads(0):
        pass


def test_concurrent_caps_keep_the_cap_until_the_last_one_ends():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with scoring_threads():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with scoring_threads():
            second_in.set()
            first_out.wait(10)
            seen["while the first ended"] = torch.get_num_threads()

    errors = []

    def run(target):
        try:
            target()
        except Exception as error:  # an exception in a thread would otherwise pass unseen
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f,)) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert seen == {"while the first ended": 1}
    assert torch.get_num_threads() == 3


def test_scoring_threads_follow_the_environment(monkeypatch):
    monkeypatch.setenv(SCORING_THREADS_ENV, "2")
    with scoring_threads():
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 3


def test_auto_is_the_cpus_this_process_may_use(monkeypatch):
    import os

    from latent_sculpting import threads

    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
        assert threads.available_cpus() == 3
        monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert threads.available_cpus() == 7
    assert resolve_threads("auto") == resolve_threads(" AUTO ") == resolve_threads(None) == 7
    assert resolve_threads("3") == resolve_threads(3) == 3
    assert resolve_n_jobs(None) == 1 and resolve_n_jobs(-1) == 7 and resolve_n_jobs(2) == 2


@pytest.mark.parametrize("value", [0, -2, "0", "-2", "two", "1.5", "", True])
def test_bad_thread_counts_are_refused_naming_the_flag(value):
    with pytest.raises(ValueError, match=r"--threads takes auto or a whole number at least 1"):
        resolve_threads(value)


@pytest.mark.parametrize("n_jobs", [0, -2])
def test_bad_n_jobs_are_refused(n_jobs):
    with pytest.raises(ValueError, match=f"n_jobs must be -1, None or at least 1, got {n_jobs}"):
        resolve_n_jobs(n_jobs)


def test_workers_return_results_in_task_order_under_one_thread():
    def task(i):
        return i, torch.get_num_threads()

    for n_jobs in (1, 2, 4):
        assert map_workers(task, [(i,) for i in range(5)], n_jobs) == [(i, 1) for i in range(5)]
    assert torch.get_num_threads() == 3


def test_single_thread_blas_restores_the_count_its_first_holder_found():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        assert before and max(before) == 2
        started, release = threading.Event(), threading.Event()

        def hold():
            with single_thread_blas():
                started.set()
                release.wait(10)

        other = threading.Thread(target=hold)
        other.start()
        started.wait(10)
        with single_thread_blas():
            assert blas_threads() == [1] * len(before)
        assert blas_threads() == [1] * len(before)  # the other thread still holds it
        release.set()
        other.join()
        assert blas_threads() == before


def test_a_workers_thread_cap_covers_torch_blas_and_arrow():
    # In a child process: the cap stays for the rest of the process.
    code = (
        "import pyarrow, torch, threadpoolctl\n"
        "from latent_sculpting.threads import set_process_threads\n"
        "pyarrow.set_cpu_count(3); torch.set_num_threads(3)\n"
        "set_process_threads(1)\n"
        "blas = [p['num_threads'] for p in threadpoolctl.threadpool_info()]\n"
        "print(torch.get_num_threads(), pyarrow.cpu_count(), max(blas, default=1))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "1", "1"]
