"""Reading manifests and folders of pairs (real files written with SimpleITK)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl_radiomics.config import PrepareConfig
from napari_ssl_radiomics.core.cohort import CaseError, load_cohort, read_case
from napari_ssl_radiomics.core.preprocess import prepare_case


def write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(array)
    if img.GetDimension() == 3:
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def blob(size=16, value=1):
    mask = np.zeros((size,) * 3, np.uint8)
    mask[5:11, 4:10, 6:12] = value
    return mask


def volume(seed=0, size=16):
    return np.random.default_rng(seed).normal(100, 20, (size,) * 3).astype(np.float32)


def test_manifest_columns_relative_paths_and_channels(tmp_path):
    data = tmp_path / "data"
    write(data / "a_t1.nii.gz", volume(1))
    write(data / "a_t2.nrrd", volume(2, 20), spacing=(0.8, 0.8, 0.8))  # another grid: resampled onto T1
    write(data / "a_mask.nii.gz", blob(value=255))
    (tmp_path / "m.csv").write_text(
        "ID,Image,Image_T2,Mask,Label,Group,MaskLabel\n"
        "a,data/a_t1.nii.gz,data/a_t2.nrrd,data/a_mask.nii.gz,high,site1,\n",
        encoding="utf-8",
    )
    cohort = load_cohort(tmp_path / "m.csv")
    assert cohort.problems == []
    case = cohort.cases[0]
    assert (case.id, case.label, case.group, case.mask_label) == ("a", "high", "site1", None)
    assert case.image.resolve() == (data / "a_t1.nii.gz").resolve()
    assert case.channels == ["Image", "Image_T2"]
    images, mask = read_case(case, PrepareConfig())
    assert len(images) == 2
    assert images[1].GetSize() == images[0].GetSize() and images[1].GetSpacing() == images[0].GetSpacing()
    # the only nonzero value (255) is the ROI; the mask comes back binary
    arr = sitk.GetArrayFromImage(mask)
    assert set(np.unique(arr)) == {0, 1} and arr.sum() == (blob() > 0).sum()
    # both channels reach the crop, each rescaled on its own range
    crop, crop_mask, meta = prepare_case(case, PrepareConfig(size=12, spacing=1.0))
    assert crop.shape == (2, 12, 12, 12) and crop_mask.shape == (12, 12, 12)
    assert meta["channels"] == ["Image", "Image_T2"] and len(meta["intensity_range"]) == 2
    assert set(meta["sources"]) == {"Image", "Image_T2", "Mask"}


def test_manifest_with_byte_order_mark_and_masklabel(tmp_path):
    write(tmp_path / "i.nii.gz", volume())
    write(tmp_path / "m.nii.gz", blob(value=4))
    (tmp_path / "m.csv").write_bytes("\ufeffID,Image,Mask,MaskLabel\r\nx,i.nii.gz,m.nii.gz,4\r\n".encode("utf-8"))
    case = load_cohort(tmp_path / "m.csv").cases[0]
    assert (case.id, case.mask_label) == ("x", 4)
    (tmp_path / "bad.csv").write_text("ID,Image,Mask,MaskLabel\ny,i.nii.gz,m.nii.gz,four\n", encoding="utf-8")
    cohort = load_cohort(tmp_path / "bad.csv")
    assert cohort.cases == [] and "MaskLabel 'four' is not a label" in cohort.problems[0][1]


def test_manifest_without_image_or_mask_names_the_columns(tmp_path):
    (tmp_path / "m.csv").write_text("ID,image_path,Mask\na,x.nii.gz,y.nii.gz\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_cohort(tmp_path / "m.csv")
    text = str(err.value)
    assert "['Image']" in text and "image_path" in text and "found" in text


def test_ids_default_to_file_names_and_duplicates_are_rejected(tmp_path):
    (tmp_path / "m.csv").write_text("Image,Mask\nx/p1.nii.gz,p1_m.nii.gz\nx/p2.nrrd,p2_m.nii.gz\n", encoding="utf-8")
    assert [c.id for c in load_cohort(tmp_path / "m.csv").cases] == ["p1", "p2"]
    (tmp_path / "d.csv").write_text(
        "ID,Image,Mask\nA,a.nii,am.nii\nB,b.nii,bm.nii\nA,c.nii,cm.nii\n,d.nii,dm.nii\n", encoding="utf-8"
    )
    cohort = load_cohort(tmp_path / "d.csv")
    assert [c.id for c in cohort.cases] == ["A", "B"]
    assert cohort.problems[0][0] == "A" and "duplicate ID" in cohort.problems[0][1] and "row 1" in cohort.problems[0][1]
    assert cohort.problems[1][0] == "row 4" and "empty ID" in cohort.problems[1][1]


def test_folder_of_pairs_both_layouts(tmp_path):
    flat = tmp_path / "flat"
    write(flat / "c1_image.nii.gz", volume())
    write(flat / "c1_mask.nii.gz", blob())
    write(flat / "c2.nrrd", volume())
    write(flat / "c2-label.nrrd", blob())
    write(flat / "lonely_image.nii.gz", volume())
    cohort = load_cohort(flat)
    assert [(c.id, c.image.name, c.mask.name) for c in cohort.cases] == [
        ("c1", "c1_image.nii.gz", "c1_mask.nii.gz"),
        ("c2", "c2.nrrd", "c2-label.nrrd"),
    ]
    assert cohort.problems[0][0] == "lonely" and "no mask" in cohort.problems[0][1]
    split = tmp_path / "split"
    write(split / "images" / "p.mha", volume())
    write(split / "masks" / "p.mha", blob())
    assert [(c.id, c.mask.parent.name) for c in load_cohort(split).cases] == [("p", "masks")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image/mask pairs"):
        load_cohort(tmp_path / "empty")


def test_dicom_series_folder(tmp_path):
    arr = (volume() * 10).astype(np.int16)
    series = tmp_path / "ct"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.7, 2.0))
    for z in range(arr.shape[0]):
        sl = img[:, :, z]
        for tag, value in (
            ("0020|000e", "1.2.826.0.1.3680043.2.1125.1"),
            ("0020|0013", str(z + 1)),
            ("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, z))))),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0008|0060", "CT"),
            ("0028|0030", "0.7\\0.7"),
        ):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(series / f"{z:03d}.dcm"))
        writer.Execute(sl)
    write(tmp_path / "m.nrrd", blob(), spacing=(0.7, 0.7, 2.0))
    (tmp_path / "m.csv").write_text("ID,Image,Mask\nct,ct,m.nrrd\n", encoding="utf-8")
    images, mask = read_case(load_cohort(tmp_path / "m.csv").cases[0], PrepareConfig())
    assert images[0].GetSize() == (16, 16, 16)
    assert np.allclose(images[0].GetSpacing(), (0.7, 0.7, 2.0))
    assert np.array_equal(sitk.GetArrayFromImage(images[0]), arr.astype(np.float32))


def test_case_error_names_case(tmp_path):
    (tmp_path / "m.csv").write_text("ID,Image,Mask\nzz,none.nii.gz,none_m.nii.gz\n", encoding="utf-8")
    with pytest.raises(CaseError) as err:
        read_case(load_cohort(tmp_path / "m.csv").cases[0], PrepareConfig())
    assert err.value.case_id == "zz" and str(err.value).startswith("case zz:") and "not found" in str(err.value)
