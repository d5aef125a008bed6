"""Thread caps for work on machines whose cores are shared."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["limit_threads"]


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Cap BLAS/OpenMP and torch threads at ``n`` for the block (None: leave them alone).

    On a machine whose cores are shared, OpenMP workers that spin-wait for busy cores make
    scikit-learn's histogram boosting and MLP many times slower than one thread is.
    """
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)
