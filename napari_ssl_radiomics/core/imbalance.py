"""The RE/SE module: k-means on encoder features, then sample re-weighting or selection.

Features are ``(N, d)`` numpy arrays (the encoder's representations of a batch or of a
candidate pool, computed without gradients). Indices returned are positions in that array.

Choices where the paper is silent:

- k-means is scikit-learn's ``KMeans`` (k-means++, ``n_init`` = 3, seeded) so that a run is
  reproducible; on a handful of vectors it takes about a millisecond.
- RE: a sample of cluster j gets ``N / f_j``, rescaled so the smallest weight is 1 (i.e.
  ``max(f) / f_j``); the caller averages the per-sample losses with these weights.
- SE needs a candidate pool larger than the batch. The paper's N = k x q (q = 10) is for its
  batch of m = 6; :func:`default_pool` keeps that ratio for larger batches. The two
  clusters whose centroids are farthest apart (Euclidean) are taken, and the m/2 pool
  members nearest (Euclidean) to each of the two centroids, whatever cluster they belong
  to. The picks are distinct: the first centroid (the lower cluster id) picks first, the
  second picks among the rest. For an odd m the first centroid gets the extra one.
- Degenerate cases fall back instead of failing:
  fewer distinct feature vectors than k → k-means with k = number of distinct vectors
  (so fewer than k clusters come back); k < 2 or a single cluster → RE weights all 1, SE
  takes the first m pool members (the pool is a random draw, so this is a plain vanilla
  batch); a pool of at most m members → SE takes the whole pool.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

MODES = ("none", "re", "se")
#: the paper's candidate pool holds q = 10 cases per cluster (N = k x q) ...
POOL_PER_CLUSTER = 10
#: ... for its batch of m = 6
PAPER_BATCH = 6


def default_pool(k: int, m: int) -> int:
    """SE's default candidate pool N for k clusters and a batch of m cases.

    The paper draws N = k x 10 candidates for a batch of m = 6 (for k = 3, 6 of 30). A
    pool that stays at k x 10 while the batch grows selects less and less, and from
    m >= N it selects nothing: :func:`select` takes the whole pool. So the pool grows with
    the batch, keeping the paper's ratio: ``max(k * 10, ceil(k * 10 * m / 6))``, which is
    the paper's k x 10 for every m <= 6.

    Parameters
    ----------
    k
        Number of k-means clusters (k < 1 counts as 1).
    m
        Batch size: under torchrun, the global batch of all processes.

    Returns
    -------
    int
        The pool size N (before it is capped at the cohort's size).
    """
    base = max(1, int(k)) * POOL_PER_CLUSTER
    return max(base, -(-base * int(m) // PAPER_BATCH))


@dataclass
class BatchPlan:
    """What the RE/SE module decided for one step (for training, the cluster view and logs).

    Attributes
    ----------
    indices
        (m,) int positions in the pool of the samples to train on.
    weights
        (m,) float loss weight of each trained sample (1 unless mode is 're').
    clusters
        (pool,) cluster id of each pool member.
    cluster_sizes
        Members of each cluster (length = number of clusters found, at most k).
    centroids
        (clusters, d) cluster centres in feature space.
    selected_clusters
        The two farthest clusters that SE sampled around; None for 'none' / 're' or when
        SE fell back to a plain batch.
    mode
        'none', 're' or 'se'.
    """

    indices: np.ndarray
    weights: np.ndarray
    clusters: np.ndarray
    cluster_sizes: list[int]
    centroids: np.ndarray
    selected_clusters: tuple[int, int] | None
    mode: str = "none"


def _check_features(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, d) array; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values (has the training diverged?)")
    return x


def kmeans(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means.

    Parameters
    ----------
    features
        (N, d) feature vectors.
    k
        Requested number of clusters; fewer come back when there are fewer distinct vectors
        (k < 1 counts as 1).
    seed
        Seed of the k-means++ initialisation.

    Returns
    -------
    labels, centroids
        (N,) int64 cluster ids in ``[0, k')`` and (k', d) float64 centres, ``k' <= k``.
    """
    from sklearn.cluster import KMeans

    x = _check_features(features)
    distinct = len(np.unique(x, axis=0))
    k_eff = max(1, min(int(k), distinct))
    if k_eff == 1:
        return np.zeros(len(x), dtype=np.int64), x.mean(axis=0, keepdims=True)
    with warnings.catch_warnings():
        # near-duplicate vectors can still warn about convergence; the result is usable
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=k_eff, n_init=3, random_state=int(seed) % 2**32).fit(x)
    return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float64)


def reweight(labels: np.ndarray, k: int) -> np.ndarray:
    """RE weights: ``N / f_j`` for a sample of cluster j, rescaled so the minimum is 1.

    ``labels`` (N,) cluster ids in ``[0, k)``; returns (N,) float64 weights.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return np.zeros(0)
    counts = np.bincount(labels, minlength=max(int(k), int(labels.max()) + 1))
    w = len(labels) / counts[labels]
    return w / w.min()


def _farthest_pair(centroids: np.ndarray) -> tuple[int, int]:
    c = np.asarray(centroids, dtype=np.float64)
    dist = np.linalg.norm(c[:, None, :] - c[None, :, :], axis=-1)
    i, j = np.triu_indices(len(c), k=1)
    best = int(np.argmax(dist[i, j]))  # first maximum: ties go to the lower ids
    return int(i[best]), int(j[best])


def _select(features, labels, centroids, m: int) -> tuple[np.ndarray, tuple[int, int] | None]:
    x = _check_features(features)
    n, m = len(x), int(m)
    if m < 1:
        raise ValueError(f"the selected batch size m must be at least 1; got {m}")
    if n <= m:
        return np.arange(n), None
    c = np.asarray(centroids, dtype=np.float64)
    if len(c) < 2 or len(np.unique(labels)) < 2:
        return np.arange(m), None
    a, b = _farthest_pair(c)
    taken = np.zeros(n, dtype=bool)
    picks = []
    for centre, count in ((a, m - m // 2), (b, m // 2)):
        dist = np.linalg.norm(x - c[centre], axis=1)
        dist[taken] = np.inf
        chosen = np.argsort(dist, kind="stable")[:count]
        taken[chosen] = True
        picks.append(chosen)
    return np.concatenate(picks).astype(np.int64), (a, b)


def select(features: np.ndarray, labels: np.ndarray, centroids: np.ndarray, m: int) -> np.ndarray:
    """SE: the m/2 pool members nearest to each of the two farthest-apart centroids.

    Parameters
    ----------
    features
        (N, d) features of the candidate pool.
    labels
        (N,) cluster ids from :func:`kmeans`.
    centroids
        (k, d) cluster centres from :func:`kmeans`.
    m
        Size of the new batch.

    Returns
    -------
    (m,) int64 distinct positions in the pool, the first centroid's picks first (nearest
    first). See the module notes for the fallbacks (pool <= m, one cluster).
    """
    return _select(features, labels, centroids, m)[0]


def plan_batch(mode: str, features: np.ndarray, k: int, m: int, seed: int) -> BatchPlan:
    """Cluster the pool's features and decide the batch for one training step.

    Parameters
    ----------
    mode
        'none': train on the whole pool (the batch) with weights 1; 're': the whole pool,
        re-weighted; 'se': m members selected from the pool, weights 1.
    features
        (N, d) encoder features of the pool (for 'none' and 're' the pool is the batch).
    k
        Number of k-means clusters.
    m
        Selected batch size (used by 'se' only).
    seed
        Seed of the k-means.
    """
    if mode not in MODES:
        raise ValueError(f"unknown imbalance mode {mode!r}; choose one of {list(MODES)}")
    labels, centroids = kmeans(features, k, seed)
    sizes = np.bincount(labels, minlength=len(centroids)).tolist()
    n = len(labels)
    pair = None
    if mode == "se":
        indices, pair = _select(features, labels, centroids, m)
        weights = np.ones(len(indices))
    else:
        indices = np.arange(n)
        weights = reweight(labels, len(centroids)) if mode == "re" else np.ones(n)
    return BatchPlan(indices.astype(np.int64), weights, labels, sizes, centroids, pair, mode)
