"""The RE/SE module on hand-made clusterings and feature sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from napari_ssl_radiomics.core.imbalance import BatchPlan, default_pool, kmeans, plan_batch, reweight, select


def blobs(sizes=(12, 9, 3), centres=((0, 0), (2, 0), (12, 0)), seed=0):
    """Tight 2D blobs; the last (smallest) one is far from the others."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.asarray(c, float) + 0.1 * rng.normal(size=(n, 2)) for n, c in zip(sizes, centres)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return x, truth


def test_reweight_is_n_over_f_rescaled_to_min_one():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])  # N = 7, f = (4, 2, 1): N/f = 1.75, 3.5, 7
    np.testing.assert_allclose(reweight(labels, 3), [1, 1, 1, 1, 2, 2, 4])
    np.testing.assert_allclose(reweight(np.array([2, 0, 2, 0, 0, 0]), 3), [2, 1, 2, 1, 1, 1])
    np.testing.assert_allclose(reweight(np.zeros(5, int), 3), np.ones(5))


def test_kmeans_is_seeded_and_finds_clear_clusters():
    x, truth = blobs()
    a_labels, a_centres = kmeans(x, 3, seed=4)
    b_labels, b_centres = kmeans(x, 3, seed=4)
    assert np.array_equal(a_labels, b_labels) and np.array_equal(a_centres, b_centres)
    assert adjusted_rand_score(truth, a_labels) == 1.0
    assert a_centres.shape == (3, 2)


def test_kmeans_with_fewer_distinct_points_than_k():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    labels, centres = kmeans(x, 3, seed=0)
    assert len(centres) == 2 and labels[0] == labels[1] != labels[2] == labels[3]
    labels, centres = kmeans(np.ones((5, 4)), 3, seed=0)
    assert np.all(labels == 0) and centres.shape == (1, 4)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.array([[0.0, np.nan], [1.0, 1.0]]), 2, seed=0)


def test_select_takes_the_nearest_to_the_two_farthest_centroids():
    # centroids 0 and 2 are the farthest pair; distances to them are all distinct
    centroids = np.array([[0.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    x = np.array(
        [
            [0.1, 0],
            [0.5, 0],
            [-0.2, 0],
            [0.9, 0],
            [0.3, 0.1],  # near c0: order 0, 2, 4, 1, 3
            [3.0, 0],
            [2.8, 0],
            [3.3, 0],  # around c1
            [10.0, 0.4],
            [9.7, 0],
            [10.8, 0],  # near c2: order 9, 8, 10
        ]
    )
    labels = np.array([0] * 5 + [1] * 3 + [2] * 3)
    assert select(x, labels, centroids, 6).tolist() == [0, 2, 4, 9, 8, 10]
    assert select(x, labels, centroids, 5).tolist() == [0, 2, 4, 9, 8]  # odd m: the extra one to the first


def test_select_picks_are_distinct():
    # c1's two nearest points (1 and 0) were already taken by c0: it gets the next ones
    centroids = np.array([[0.0], [0.35]])
    x = np.array([[0.0], [0.3], [0.5], [0.9], [3.0], [-3.0]])
    labels = np.array([0, 1, 1, 1, 1, 0])
    assert select(x, labels, centroids, 4).tolist() == [0, 1, 2, 3]
    assert select(x, labels, centroids, 6).tolist() == list(range(6))  # pool <= m: all of it


def test_plan_batch_se_on_a_feature_set_with_a_far_minority():
    x, truth = blobs(sizes=(20, 10, 4))
    plan = plan_batch("se", x, k=3, m=6, seed=0)
    assert isinstance(plan, BatchPlan)
    assert sorted(plan.cluster_sizes) == [4, 10, 20]
    a, b = plan.selected_clusters
    far = {int(plan.clusters[0]), int(plan.clusters[-1])}  # the blobs at (0, 0) and (12, 0)
    assert {a, b} == far
    picked_truth = truth[plan.indices]
    assert len(plan.indices) == 6 and len(set(plan.indices.tolist())) == 6
    assert (picked_truth == 0).sum() == 3 and (picked_truth == 2).sum() == 3
    assert np.all(plan.weights == 1)


def test_plan_batch_re_and_none():
    x, truth = blobs(sizes=(3, 2, 1))
    plan = plan_batch("re", x, k=3, m=6, seed=0)
    np.testing.assert_array_equal(plan.indices, np.arange(6))
    expected = reweight(plan.clusters, 3)
    np.testing.assert_allclose(plan.weights, expected)
    np.testing.assert_allclose(sorted(plan.weights), [1, 1, 1, 1.5, 1.5, 3])
    assert plan.selected_clusters is None
    plain = plan_batch("none", x, k=3, m=6, seed=0)
    assert np.all(plain.weights == 1) and len(plain.indices) == 6


def test_plan_batch_degenerate_cases_fall_back():
    x, _ = blobs()
    one = plan_batch("se", x, k=1, m=6, seed=0)  # no pair of clusters: a plain batch
    assert one.indices.tolist() == list(range(6)) and one.selected_clusters is None
    same = plan_batch("se", np.ones((10, 8)), k=3, m=4, seed=0)
    assert same.cluster_sizes == [10] and len(same.indices) == 4
    small = plan_batch("se", x[:4], k=3, m=6, seed=0)  # pool smaller than m: all of it
    assert small.indices.tolist() == [0, 1, 2, 3]
    flat = plan_batch("re", np.zeros((5, 3)), k=3, m=5, seed=0)
    assert np.all(flat.weights == 1)
    with pytest.raises(ValueError, match="unknown imbalance mode"):
        plan_batch("both", x, k=3, m=6, seed=0)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        plan_batch("se", np.zeros((0, 3)), k=3, m=6, seed=0)


def test_default_pool_keeps_the_papers_ratio_as_the_batch_grows():
    # the paper's N = k x 10 for its batch of 6, unchanged for any batch up to 6
    assert [default_pool(3, m) for m in (1, 2, 6)] == [30, 30, 30]
    assert [default_pool(2, 6), default_pool(1, 6)] == [20, 10]
    # beyond, N = ceil(k x 10 x m / 6): 8 processes x 16 select 128 of 640, as 6 of 30
    assert [default_pool(3, 7), default_pool(3, 24), default_pool(3, 128), default_pool(2, 20)] == [35, 120, 640, 67]
    # so SE selects m of them, 6 around the far, small cluster, instead of taking the whole pool
    x, truth = blobs(sizes=(35, 18, 7))
    assert len(x) == default_pool(3, 12) == 60
    plan = plan_batch("se", x, k=3, m=12, seed=0)
    assert len(plan.indices) == 12 and plan.selected_clusters is not None
    assert (truth[plan.indices] == 2).sum() == 6  # 7 of 60 in the pool, half the batch
