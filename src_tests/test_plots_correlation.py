"""The paper's Fig. 2 (pairwise feature correlations) and the evaluation plots."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_ssl_radiomics.core.plots import correlation_density, pairwise_correlations


def test_pairwise_correlations_equal_numpy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6))
    t = pd.DataFrame(X, columns=[f"ssl_{i}" for i in range(6)]).assign(
        ID=[str(i) for i in range(50)], Label="a", const=1.0
    )
    r = pairwise_correlations(t)
    expected = np.corrcoef(X, rowvar=False)[np.triu_indices(6, k=1)]
    np.testing.assert_allclose(np.sort(r), np.sort(expected), atol=1e-12)


def test_correlation_density_overlays_tables(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(80, 1))
    correlated = pd.DataFrame(base + 0.3 * rng.normal(size=(80, 20)), columns=[f"a{i}" for i in range(20)])
    independent = pd.DataFrame(rng.normal(size=(80, 20)), columns=[f"b{i}" for i in range(20)])
    assert (
        np.abs(pairwise_correlations(correlated)).mean() > 0.8 > 0.2 > np.abs(pairwise_correlations(independent)).mean()
    )
    path = correlation_density({"after SE": correlated, "before SE": independent}, tmp_path / "fig2.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000
