"""Traditional radiomics on AdrenalMNIST3D through the full pipeline: NIfTI + manifest,
pyradiomics extraction, and the paper's SVM evaluation.

AdrenalMNIST3D (MedMNIST v2): 28³ binary adrenal shapes (0/255), label 1 = the minority
class (~22%). The official train, val and test splits are pooled (1584 volumes) and
evaluated by stratified 5-fold cross-validation, as the paper does. The image itself is
the image, ``image > 0`` the mask, spacing 1 mm.

    .venv/bin/python benchmarks/adrenal_eval.py [--out DIR] [--limit N] [--repeats R] [--jobs J]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
NPZ = (
    Path(os.environ.get("SSL_RADIOMICS_SHARED", ROOT.parent / "shared"))
    / "data"
    / "adrenalmnist3d"
    / "adrenalmnist3d.npz"
)


def load_pooled(npz: Path = NPZ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Volumes (N, 28, 28, 28) uint8, labels (N,) int and IDs ``<split>_<index>``, splits pooled."""
    data = np.load(npz)
    images, labels, ids = [], [], []
    for split in ("train", "val", "test"):
        images.append(data[f"{split}_images"])
        labels.append(data[f"{split}_labels"].ravel())
        ids += [f"{split}_{i:04d}" for i in range(len(labels[-1]))]
    return np.concatenate(images), np.concatenate(labels).astype(int), ids


def stratified_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a stratified random subset of ``n`` cases."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    if n >= len(labels):
        return idx
    keep, _ = train_test_split(idx, train_size=n, stratify=labels, random_state=seed)
    return np.sort(keep)


def write_cohort(out: Path, images: np.ndarray, labels: np.ndarray, ids: list[str]) -> Path:
    """One NIfTI image and mask per volume (1 mm spacing) and a manifest; returns its path."""
    import SimpleITK as sitk

    folder = out / "nifti"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for vol, label, case_id in zip(images, labels, ids):
        img, msk = folder / f"{case_id}_image.nii.gz", folder / f"{case_id}_mask.nii.gz"
        if not (img.exists() and msk.exists()):
            sitk.WriteImage(sitk.GetImageFromArray(vol.astype(np.uint8)), str(img))
            sitk.WriteImage(sitk.GetImageFromArray((vol > 0).astype(np.uint8)), str(msk))
        rows.append({"ID": case_id, "Image": str(img), "Mask": str(msk), "Label": str(label)})
    manifest = out / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="adrenal_results", help="output folder")
    ap.add_argument("--limit", type=int, default=0, help="a stratified subset of this many cases (0: all 1584)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=0)
    args = ap.parse_args()

    from napari_ssl_radiomics.cli import main as cli

    out = Path(args.out)
    t0 = time.perf_counter()
    images, labels, ids = load_pooled()
    keep = stratified_subset(labels, args.limit) if args.limit else np.arange(len(labels))
    manifest = write_cohort(out, images[keep], labels[keep], [ids[i] for i in keep])
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert cli(["radiomics", str(manifest), "--out", str(out / "trad.csv"), "--jobs", str(args.jobs)]) == 0
    t_extract = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert (
        cli(
            [
                "evaluate",
                f"trad={out / 'trad.csv'}",
                "--out",
                str(out / "evaluation"),
                "--repeats",
                str(args.repeats),
                "--positive",
                "1",
            ]
        )
        == 0
    )
    t_eval = time.perf_counter() - t0
    res = pd.read_csv(out / "evaluation" / "results.csv")
    agg = res.groupby(["label_fraction", "metric"])["value"].agg(["mean", "std"])
    print(
        f"\nAdrenalMNIST3D: {len(keep)} cases ({int(labels[keep].sum())} positive), {args.repeats} repeat(s) of 5-fold CV"
    )
    print("| labels | sensitivity | specificity | AUC | balanced accuracy |")
    print("|---|---|---|---|---|")
    for frac in sorted(set(res["label_fraction"]), reverse=True):
        cells = [
            f"{agg.loc[(frac, m), 'mean']:.3f} ± {agg.loc[(frac, m), 'std']:.3f}"
            for m in ("sensitivity", "specificity", "auc", "balanced_accuracy")
        ]
        print(f"| {frac:.0%} | " + " | ".join(cells) + " |")
    print(f"wall time: write {t_write:.1f} s, extract {t_extract:.1f} s, evaluate {t_eval:.1f} s")


if __name__ == "__main__":
    main()
