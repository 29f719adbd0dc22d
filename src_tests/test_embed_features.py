"""Embeddings from a trained run: shape, IDs, determinism, agreement with `encode`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_train_engine import make_cache  # the shared synthetic-cache fixture

from napari_ssl_radiomics.config import AugmentConfig, TrainConfig
from napari_ssl_radiomics.core.cache import load_prepared
from napari_ssl_radiomics.core.checkpoint import load_model
from napari_ssl_radiomics.core.embed import embed, embed_iter, encode, feature_columns
from napari_ssl_radiomics.core.events import Progress, drive
from napari_ssl_radiomics.core.train import run_to_end, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("embed")
    cache = make_cache(root / "cache", cases=6)
    cfg = TrainConfig(mode="none", batch_size=3, iterations=2, device="cpu", seed=0)
    run_to_end(train(cache, root / "run", cfg, AugmentConfig()))
    return cache, root / "run"


def test_embed_gives_one_row_of_256_per_case_deterministically(trained):
    cache, run = trained
    table = embed(run, cache, device="cpu", batch_size=4)
    data = load_prepared(cache)
    assert table.shape == (6, 257)
    assert list(table.columns) == ["ID", *feature_columns(256)]
    assert table["ID"].tolist() == data.ids
    values = table[feature_columns()].to_numpy()
    assert np.isfinite(values).all() and values.std(axis=0).max() > 0  # cases differ
    again = embed(run, cache, device="cpu", batch_size=4)
    np.testing.assert_array_equal(again[feature_columns()].to_numpy(), values)
    # eval mode: a case's vector does not depend on the batch it is encoded in
    model = load_model(run)
    model.train()
    one_by_one = encode(model, data.images, device="cpu", batch_size=1)
    assert model.training  # encode leaves the mode as it found it
    np.testing.assert_allclose(one_by_one, values, rtol=1e-4, atol=1e-5)
    # (N, S, S, S) single-channel volumes are accepted too
    np.testing.assert_allclose(encode(model.encoder, data.images[:, 0], batch_size=6), values, rtol=1e-4, atol=1e-5)


def test_embed_iter_reports_cases_encoded_and_reads_a_uint8_memmap_by_batch(trained, tmp_path):
    cache, run = trained
    seen = []
    table = drive(embed_iter(run, cache, device="cpu", batch_size=4), seen.append)
    assert all(isinstance(e, Progress) for e in seen)
    assert [(e.index, e.total) for e in seen] == [(4, 6), (6, 6)]
    np.testing.assert_array_equal(table.to_numpy(), embed(run, cache, device="cpu", batch_size=4).to_numpy())
    # a uint8 memmap (a streamed cohort) encodes as its float32 copy would
    data = load_prepared(cache)
    stored = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=data.images.shape)
    stored[:] = np.clip(np.rint(data.images), 0, 255).astype(np.uint8)
    model = load_model(run)
    np.testing.assert_allclose(
        encode(model, stored, batch_size=4),
        encode(model, np.asarray(stored, dtype=np.float32), batch_size=6),
        rtol=1e-5,
        atol=1e-6,
    )


def test_embed_refuses_a_cohort_with_other_channels(trained, tmp_path):
    cache, run = trained
    data = load_prepared(cache)
    data.images = np.concatenate([data.images, data.images], axis=1)
    with pytest.raises(ValueError, match="channel"):
        embed(run, data, device="cpu")
    with pytest.raises(FileNotFoundError, match="train a run first"):
        load_model(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"\(N, C, S, S, S\)"):
        encode(load_model(run), np.zeros((2, 28, 28)))
