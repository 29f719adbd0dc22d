"""A cohort larger than the memory budget trains from the memory-mapped uint8 cache.

The cache is the synthetic sample cohort prepared at 27³ (the encoder's minimum), six cases.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from napari_ssl_radiomics.config import AugmentConfig, PrepareConfig, SampleConfig, TrainConfig
from napari_ssl_radiomics.core.cache import (
    GIB,
    STREAM,
    StreamedCrops,
    build_stream,
    in_memory_bytes,
    is_streamed,
    load_for_training,
    load_prepared,
    load_streamed,
)
from napari_ssl_radiomics.core.events import drive
from napari_ssl_radiomics.core.preprocess import prepare_all
from napari_ssl_radiomics.core.sample import write_sample_cohort
from napari_ssl_radiomics.core.train import train


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    manifest = write_sample_cohort(root / "cohort", SampleConfig(cases=6, size=32, seed=2))
    prepare_all(manifest, PrepareConfig(size=27, jobs=1), root / "cache")
    return root / "cache"


def test_the_stream_holds_the_crops_as_whole_grey_levels(cache):
    memory, streamed = load_prepared(cache), load_streamed(cache)
    assert isinstance(streamed.images, np.memmap) and streamed.images.dtype == np.uint8
    assert streamed.ids == memory.ids and streamed.labels == memory.labels
    np.testing.assert_array_equal(streamed.images, np.rint(np.clip(memory.images, 0, 255)))
    np.testing.assert_array_equal(streamed.masks, memory.masks)
    assert np.abs(streamed.images - memory.images).max() <= 0.5


def test_the_budget_chooses_memory_or_the_memory_map(cache):
    need = in_memory_bytes(cache) / GIB
    assert not is_streamed(load_for_training(cache, budget_gib=need * 2))
    assert is_streamed(load_for_training(cache, budget_gib=need / 2))


def test_a_changed_cache_rebuilds_the_stream(cache, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    build_stream(copy)
    before = np.array(load_streamed(copy).images)
    ids = load_streamed(copy).ids
    first = ids[0]
    with np.load(copy / "crops" / f"{first}.npz") as data:
        image, mask = data["image"], data["mask"]
    np.savez(copy / "crops" / f"{first}.npz", image=np.full_like(image, 7.0), mask=mask)
    after = load_streamed(copy)
    assert np.all(after.images[0] == 7) and not np.all(before[0] == 7)
    np.testing.assert_array_equal(after.images[1:], before[1:])
    assert (copy / STREAM / "index.json").exists()


def test_read_ahead_gives_exactly_the_rows_asked_for(cache):
    images = load_streamed(cache).images
    crops = StreamedCrops(images)
    try:
        crops.prefetch(np.array([4, 1, 1]))
        got = crops.take(np.array([1, 3, 4, 1]))
        np.testing.assert_array_equal(got.numpy(), images[[1, 3, 4, 1]].astype(np.float32))
        assert (crops.hits, crops.misses) == (3, 1)
    finally:
        crops.close()


def test_a_cohort_over_the_budget_trains_with_the_in_memory_losses(cache, tmp_path):
    budget = in_memory_bytes(cache) / GIB / 2  # the cohort needs twice what it may take
    cfg = TrainConfig(
        mode="se", clusters=2, pool=4, batch_size=2, iterations=3, warmup_epochs=0, health_cases=0,
        checkpoint_every=100, device="cpu", seed=5, memory_gb=budget,
    )  # fmt: skip
    streamed = drive(train(cache, tmp_path / "streamed", cfg, AugmentConfig()))
    config = json.loads((tmp_path / "streamed" / "config.json").read_text(encoding="utf-8"))
    assert config["cohort"]["streamed"] is True
    # the in-memory path on the same crops (the stream's uint8 values as float32 arrays)
    data = load_streamed(cache)
    in_memory = dataclasses.replace(data, images=np.array(data.images, np.float32), masks=np.array(data.masks))
    assert not is_streamed(in_memory)
    reference = drive(train(in_memory, tmp_path / "memory", dataclasses.replace(cfg, memory_gb=0), AugmentConfig()))
    assert list(streamed.history["selected_ids"]) == list(reference.history["selected_ids"])
    np.testing.assert_array_equal(streamed.history["loss"].to_numpy(), reference.history["loss"].to_numpy())


def _fresh_copy(cache, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    build_stream(copy)
    return copy


def test_overwritten_stream_bytes_are_found_and_rebuilt_before_training(cache, tmp_path, caplog):
    copy = _fresh_copy(cache, tmp_path)
    images = copy / STREAM / "images.npy"
    size = images.stat().st_size
    block = np.load(images, mmap_mode="r+")
    block[: len(block) // 2] = 255  # half the cases become white cubes, the file keeps its size
    block.flush()
    del block
    assert images.stat().st_size == size
    budget = in_memory_bytes(copy) / GIB / 2
    cfg = TrainConfig(
        mode="se", clusters=2, pool=4, batch_size=2, iterations=2, warmup_epochs=0, health_cases=0,
        checkpoint_every=100, device="cpu", seed=5, memory_gb=budget,
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        damaged = drive(train(copy, tmp_path / "damaged", cfg, AugmentConfig()))
    notes = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(notes) == 1 and "rebuilding it from the crops" in notes[0] and "\n" not in notes[0]
    memory = load_prepared(copy)
    np.testing.assert_array_equal(load_streamed(copy).images, np.rint(np.clip(memory.images, 0, 255)))
    clean = drive(train(_fresh_copy(cache, tmp_path / "clean"), tmp_path / "clean_run", cfg, AugmentConfig()))
    np.testing.assert_array_equal(damaged.history["loss"].to_numpy(), clean.history["loss"].to_numpy())


def test_a_truncated_stream_is_rebuilt_not_an_mmap_error(cache, tmp_path, caplog):
    copy = _fresh_copy(cache, tmp_path)
    images = copy / STREAM / "images.npy"
    with open(images, "r+b") as fh:
        fh.truncate(images.stat().st_size // 3)
    with caplog.at_level("WARNING"):
        streamed = load_streamed(copy)
    assert any("images.npy" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(streamed.images, np.rint(np.clip(load_prepared(copy).images, 0, 255)))


def test_a_damaged_stream_without_its_crops_is_refused_naming_the_folder(cache, tmp_path):
    copy = _fresh_copy(cache, tmp_path)
    with open(copy / STREAM / "masks.npy", "r+b") as fh:
        fh.seek(-10, 2)
        fh.write(b"\x07" * 10)
    shutil.rmtree(copy / "crops")
    with pytest.raises(FileNotFoundError, match=r"stream must be rebuilt but .*crops lacks the crops of 6"):
        load_streamed(copy)


def test_a_sound_stream_without_its_crops_is_still_used(cache, tmp_path):
    copy = _fresh_copy(cache, tmp_path)
    before = np.array(load_streamed(copy).images)
    shutil.rmtree(copy / "crops")
    np.testing.assert_array_equal(load_streamed(copy).images, before)
    np.testing.assert_array_equal(load_for_training(copy, budget_gib=100).images, before)  # whatever the budget
    shutil.rmtree(copy / STREAM)
    with pytest.raises(FileNotFoundError, match=r"crops lacks the crops of 6 case\(s\).*holds no stream"):
        load_for_training(copy)


def test_a_large_stream_is_checked_on_a_sample_that_still_finds_wide_damage(cache, tmp_path):
    from napari_ssl_radiomics.core.cache import stream_problem

    copy = _fresh_copy(cache, tmp_path)
    index = json.loads((copy / STREAM / "index.json").read_text(encoding="utf-8"))
    assert stream_problem(copy / STREAM, index, check_bytes=1) is None
    block = np.load(copy / STREAM / "images.npy", mmap_mode="r+")
    block[:] = 0  # every case: any sample, however small, holds a damaged one
    block.flush()
    del block
    assert "differ from their digest" in stream_problem(copy / STREAM, index, check_bytes=1)
