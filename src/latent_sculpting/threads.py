"""Thread policy: how many workers a command runs, and the one place that caps intra-op threads.

**Workers, each with one intra-op thread.** Parallelism comes from independent tasks (the
folds of the stacked rule, the jobs of a benchmark), each running in a worker whose libraries
(torch, BLAS, OpenMP) use ONE intra-op thread. Intra-op threads meet at a barrier after every
operator (torch) or parallel loop (OpenMP, as in scikit-learn's histogram boosting), and a
thread that waits there spins: when another process holds one of the cores, every operator
waits for a whole scheduler slice, and two threads run many times slower than one
(``BENCHMARKS.md``). Independent tasks never wait for each other, so they use every free core
and lose only their own share when a core is taken. One thread per worker also fixes the order
of floating-point sums inside a library (scikit-learn's boosting sums gradients in per-thread
blocks), so a fit gives the same bits whatever the number of workers.

:func:`resolve_threads` turns ``--threads N|auto`` into a count of workers (``auto``: the CPUs
this process may run on, :func:`available_cpus`); :func:`resolve_n_jobs` does the same for an
estimator's ``n_jobs`` (scikit-learn's convention); :func:`map_workers` runs tasks on them.

**Caps.** :func:`limit_threads` is the one place that changes torch's (and BLAS's/OpenMP's)
intra-op thread count. Scoring caps torch alone, around each chunk of work
(:func:`scoring_threads`): it runs hundreds of small operators per chunk. The thread count is
process-wide, so caps are reference-counted: a cap nested in the same thread restores the outer
cap when it ends, and among caps held by concurrent threads (the HTTP service scores in a thread
pool) the last to end restores the setting found by the first.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch

__all__ = [
    "SCORING_THREADS_ENV",
    "available_cpus",
    "limit_threads",
    "map_workers",
    "resolve_n_jobs",
    "resolve_threads",
    "scoring_threads",
    "set_process_threads",
    "single_thread_blas",
]

#: Environment variable with the intra-op thread count of scoring (default 1).
SCORING_THREADS_ENV = "LATENT_SCULPTING_SCORING_THREADS"

_lock = threading.Lock()
_holders = 0
_saved = 0
_local = threading.local()
_blas_lock = threading.Lock()
_blas_holders = 0
_blas_saved: list[int] = []
_blas_controllers: list = []
_T = TypeVar("_T")


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the system has one (a container
    or ``taskset`` narrows it), else every CPU of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_threads(value: str | int | None, *, name: str = "--threads") -> int:
    """Workers for ``value``: ``"auto"`` (or None) is :func:`available_cpus`, else a whole
    number at least 1.

    Parameters
    ----------
    value : {"auto"}, int, str or None
        As given on the command line (text) or in code.
    name : str, default="--threads"
        What the value was given as, for the message.

    Raises
    ------
    ValueError
        If ``value`` is neither ``"auto"`` nor a whole number at least 1 (the message names
        ``name`` and the value).
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return available_cpus()
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value)
    if number is None or number < 1:
        raise ValueError(f"{name} takes auto or a whole number at least 1, got {value!r}")
    return number


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Workers for scikit-learn's ``n_jobs``: None is 1, -1 is :func:`available_cpus`.

    Raises
    ------
    ValueError
        For 0 or a negative value other than -1.
    """
    if n_jobs is None:
        return 1
    if n_jobs == -1:
        return available_cpus()
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be -1, None or at least 1, got {n_jobs}")
    return int(n_jobs)


def map_workers(func: Callable[..., _T], tasks: Iterable[Sequence[Any]], n_jobs: int) -> list[_T]:
    """``[func(*task) for task in tasks]`` on up to ``n_jobs`` worker threads, in task order,
    every library capped at one intra-op thread (also with one worker, so that the results do
    not depend on ``n_jobs``).

    Threads rather than processes: the tasks this runs (scikit-learn's histogram boosting)
    spend their time in compiled loops that release the GIL, and threads share the training
    data instead of copying it to each process (``benchmarks/speed/bench_fold_workers.py`` measures
    both). The cap is set once, here, for the whole pool: threadpoolctl's limits are
    process-wide, and caps entered and left by each worker would restore each other's.
    """
    tasks = list(tasks)
    with limit_threads(1):
        if n_jobs <= 1 or len(tasks) <= 1:
            return [func(*task) for task in tasks]
        from joblib import Parallel, delayed

        workers = min(n_jobs, len(tasks))
        return Parallel(n_jobs=workers, backend="threading")(delayed(func)(*t) for t in tasks)


@contextlib.contextmanager
def limit_threads(n: int | None, *, blas: bool = True) -> Iterator[None]:
    """Cap torch's intra-op threads (and, with ``blas``, BLAS/OpenMP's) at ``n`` for the block.

    Parameters
    ----------
    n : int or None
        Thread count; None leaves every setting alone.
    blas : bool, default=True
        Also cap BLAS and OpenMP pools through threadpoolctl. Scoring passes False: it calls
        this around every chunk, and threadpoolctl inspects the loaded libraries on each call.

    Raises
    ------
    ValueError
        If ``n`` is below 1.
    """
    global _holders, _saved
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    stack = _local.__dict__.setdefault("stack", [])
    with _lock:
        if _holders == 0:
            _saved = torch.get_num_threads()
        _holders += 1
        stack.append(n)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    try:
        if blas:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=n):
                yield
        else:
            yield
    finally:
        with _lock:
            _holders -= 1
            stack.pop()
            # The outer cap of this thread, else (other threads still hold caps) theirs.
            target = _saved if _holders == 0 else (stack[-1] if stack else None)
            if target is not None and torch.get_num_threads() != target:
                torch.set_num_threads(target)


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Hold the BLAS libraries NumPy loaded (OpenBLAS) at one thread for the block.

    Reference-counted like :func:`limit_threads`: among blocks held by concurrent threads, the
    last to end restores what the first found. The libraries are found
    once (threadpoolctl), so entering costs microseconds.
    """
    global _blas_holders
    with _blas_lock:
        if not _blas_controllers:
            from threadpoolctl import ThreadpoolController

            found = ThreadpoolController().select(user_api="blas").lib_controllers
            _blas_controllers.append(found)
        controllers = _blas_controllers[0]
        if _blas_holders == 0:
            _blas_saved[:] = [c.get_num_threads() for c in controllers]
            for c in controllers:
                _set_blas_threads(c, 1)
        _blas_holders += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_holders -= 1
            if _blas_holders == 0:
                for c, n in zip(controllers, _blas_saved, strict=True):
                    _set_blas_threads(c, n)


def _set_blas_threads(controller: object, n: int) -> None:
    # threadpoolctl lets only the first Python thread that sets a pthreads OpenBLAS's count set
    # it again, and ignores the others without a word; scoring runs on whichever thread calls
    # it (a service's request threads), and the count here is already guarded by the holders'
    # count, so it calls the library's own setter (pinned in constraints.txt; the tests check
    # that the count changes).
    setter = getattr(controller, "_real_set_num_threads", None) or controller.set_num_threads
    setter(n)


def scoring_threads() -> contextlib.AbstractContextManager[None]:
    """The cap scoring runs under: :data:`SCORING_THREADS_ENV` intra-op threads (default 1)."""
    return limit_threads(int(os.environ.get(SCORING_THREADS_ENV, "1") or 1), blas=False)


def set_process_threads(n: int) -> None:
    """Cap torch's intra-op threads, every BLAS/OpenMP pool and Arrow's CPU pool at ``n`` for
    the rest of the process: for a long-running scorer (a ``sculpt serve`` worker), whose
    parallelism comes from its worker processes rather than from threads meeting at barriers.
    (Arrow's pool parses a service's CSV bodies: spread over threads, a body costs more CPU
    in all than on one, which busy workers pay for.)

    Raises
    ------
    ValueError
        If ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    import pyarrow
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n)  # not as a context: the limits stay until the process ends
    pyarrow.set_cpu_count(n)
