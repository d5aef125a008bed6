"""The knn channel's prototypes: k-means centres of the benign rows, the same on every CPU.

Why not scikit-learn's ``MiniBatchKMeans(n_init=3)`` as it is: see :func:`kmeans_prototypes`.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["kmeans_prototypes"]

#: k-means++ seedings; the one of least inertia on its rows starts the mini-batch steps.
_KMEANS_RUNS = 3
#: Rows per mini-batch, and mini-batch steps (at least; whole passes over the rows).
_BATCH, _STEPS = 4096, 200
#: Rows k-means++ seeds from (scikit-learn's MiniBatchKMeans default, 3 batches).
_INIT_ROWS = 3 * _BATCH


def kmeans_prototypes(benign: np.ndarray, n: int, random_state: int | None) -> np.ndarray:
    """``n`` k-means centres of the benign rows (float32), seeded by ``random_state``.

    Not ``MiniBatchKMeans(n_init=3)`` as it is: which row its k-means++ picks next depends on
    near-ties of distances BLAS computes in expanded form, and the side a tie rounds to depends
    on the CPU's kernels (``OPENBLAS_CORETYPE=Prescott`` gave other prototypes, knn distances
    up to 2.6 apart, tests/test_reference_scores.py). So the seeding is done here, by
    :func:`_kmeans_plusplus` with direct float64 distances summed in a fixed order, and the
    mini-batch steps start from it on float64 rows, where they were measured to give the same
    centres under both kernels (on float32 rows one of two seeds moved). Random seeding, which
    needs no distances, gave twice the inertia of k-means++ with 1,024 prototypes on the CIC
    sample's benign rows.
    """
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.RandomState(random_state)
    wide = benign.astype(np.float64)
    trials = 2 + int(np.log(n))
    # As MiniBatchKMeans(n_init=3) does: three seedings, each on its own sample of rows, and
    # the one of least inertia on its sample (ties within 1e-9 to the first) is refined.
    init, least = None, np.inf
    for _ in range(_KMEANS_RUNS):
        rows = np.sort(rng.choice(len(wide), min(len(wide), _INIT_ROWS), replace=False))
        sample = wide[rows]
        chosen, inertia = _kmeans_plusplus(
            sample, int(rng.randint(len(rows))), rng.random_sample((n - 1, trials))
        )
        if inertia < least * (1 - 1e-9):
            init, least = sample[chosen], inertia
    kmeans = MiniBatchKMeans(
        n,
        init=init,
        random_state=int(rng.randint(2**31 - 1)),
        n_init=1,
        batch_size=_BATCH,
        # scikit-learn takes max_iter * rows // batch steps, the batch at most the rows.
        max_iter=max(1, -(-_STEPS * min(_BATCH, len(benign)) // len(benign))),
        max_no_improvement=None,
    )
    return kmeans.fit(wide).cluster_centers_.astype(np.float32)


@numba.njit(nogil=True, cache=True)
def _kmeans_plusplus(Z, first, draws):
    """Row indices of greedy k-means++ seeds, and their inertia on ``Z``.

    scikit-learn's rule: each step draws ``draws.shape[1]`` candidates with probability
    proportional to the squared distance to the nearest seed so far, and keeps the one that
    lowers the total most. ``draws`` are uniforms in [0, 1), one row per seed after ``first``.
    Distances are summed feature by feature in float64, in the same order on every CPU (the
    loop runs across rows, which the processor vectorises without reordering any row's sum),
    so every CPU picks the same rows.
    """
    n = Z.shape[0]
    columns = np.ascontiguousarray(Z.T)
    k = draws.shape[0] + 1
    chosen = np.empty(k, np.int64)
    chosen[0] = first
    closest = _squared_distances(columns, first)
    best_row = np.empty(n)
    cumulative = np.empty(n)
    for c in range(1, k):
        total = 0.0
        for i in range(n):
            total += closest[i]
            cumulative[i] = total
        best_total = np.inf
        best_index = -1
        for t in range(draws.shape[1]):
            index = min(np.searchsorted(cumulative, draws[c - 1, t] * total), n - 1)
            candidate = np.minimum(_squared_distances(columns, index), closest)
            pot = 0.0
            for i in range(n):
                pot += candidate[i]
            if pot < best_total:
                best_total = pot
                best_index = index
                best_row[:] = candidate
        chosen[c] = best_index
        closest[:] = best_row
    inertia = 0.0
    for i in range(n):
        inertia += closest[i]
    return chosen, inertia


@numba.njit(nogil=True, cache=True)
def _squared_distances(columns, row):
    """Squared distances of every row to ``row``, features summed in order (``columns`` is
    the feature-major copy of the rows)."""
    d, n = columns.shape
    acc = np.zeros(n)
    for f in range(d):
        centre = columns[f, row]
        for i in range(n):
            diff = columns[f, i] - centre
            acc[i] += diff * diff
    return acc
