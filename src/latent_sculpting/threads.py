"""Thread caps: the one place that changes torch's (and BLAS's) intra-op thread count.

Two callers need it. Runs on a machine whose cores are shared (``--threads``) cap every library
for a whole experiment: OpenMP workers that spin-wait for busy cores make scikit-learn's histogram
boosting and MLP many times slower than one thread is. Scoring caps torch alone, around each
chunk of work (:func:`scoring_threads`): PyTorch's intra-op threads meet at a barrier after every
operator, scoring runs hundreds of small operators per chunk, and when another process holds a
core the barrier waits for a whole scheduler slice (``BENCHMARKS.md``).

The thread count is process-wide, so caps are reference-counted: a cap nested in the same thread
restores the outer cap when it ends, and among caps held by concurrent threads (the HTTP
service scores in a thread pool) the last to end restores the setting found by the first.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

__all__ = ["SCORING_THREADS_ENV", "limit_threads", "scoring_threads"]

#: Environment variable with the intra-op thread count of scoring (default 1).
SCORING_THREADS_ENV = "LATENT_SCULPTING_SCORING_THREADS"

_lock = threading.Lock()
_holders = 0
_saved = 0
_local = threading.local()


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


def scoring_threads() -> contextlib.AbstractContextManager[None]:
    """The cap scoring runs under: :data:`SCORING_THREADS_ENV` intra-op threads (default 1)."""
    return limit_threads(int(os.environ.get(SCORING_THREADS_ENV, "1") or 1), blas=False)
