"""Do the learnt features carry information? 3DSiam on AdrenalMNIST3D, none / RE / SE.

Trains 3DSiam with a recipe (default: the project's default recipe) in each mode on the
pooled AdrenalMNIST3D cohort (train + val + test, 1584 volumes, 28³ or 64³), embeds every
case and prints, beside the untrained encoder (same architecture and seed, no step) and
the traditional pyradiomics features alone:

- the effective rank of the exported embeddings (exp of the entropy of the normalised
  singular values of the centred 1584 x 256 matrix);
- SSL-only AUC: the paper's protocol (linear SVM, C picked on 20% of each training fold,
  stratified 5-fold CV, ``--repeats`` repeats), mean ± sd over folds and repeats;
- SSL-only AUC minus the untrained encoder's on the same folds (mean ± fold sd);
- trad+SSL AUC and its difference to trad alone on the same folds (mean ± fold sd).

Labels are used only to score the features, never in training. The cache, the trad
features (pyradiomics, minutes) and the runs go under ``--work`` (default
``results/ssl_quality``, ignored by git) and are reused by later calls.

    python benchmarks/ssl_quality.py                 # 28³, 2000 steps per mode (CPU: hours)
    python benchmarks/ssl_quality.py --quick         # 28³, 300 steps per mode
    python benchmarks/ssl_quality.py --size 64       # on a GPU
    python benchmarks/ssl_quality.py --modes none --set lr=0.1 --tag lr0.1   # one ablation cell
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

# the sibling script (benchmarks/ is on sys.path when a script here runs)
import adrenal_eval
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("SSL_RADIOMICS_SHARED", ROOT.parent / "shared")) / "data" / "adrenalmnist3d"


def load_pooled(size: int = 28) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Volumes (N, S, S, S) uint8, labels (N,) int and IDs ``<split>_<index>``, splits pooled."""
    return adrenal_eval.load_pooled(SHARED / ("adrenalmnist3d.npz" if size == 28 else f"adrenalmnist3d_{size}.npz"))


def build_cache(folder: Path, size: int = 28) -> Path:
    """A prepared cache of the pooled cohort (image = the volume, mask = volume > 0, 1 mm).

    The volumes are already cubic crops around the organ, so they are stored as they are
    (no resampling); ``Label`` is the class (used only for scoring and the health probe).
    """
    from napari_ssl_radiomics.core.cache import CASE_COLUMNS, CASES_CSV, crop_paths, write_crop
    from napari_ssl_radiomics.core.utils import write_csv

    if (folder / CASES_CSV).exists():
        return folder
    images, labels, ids = load_pooled(size)
    rows = []
    for vol, label, case_id in zip(images, labels, ids):
        if not crop_paths(folder, case_id)[0].exists():
            write_crop(folder, case_id, vol[None].astype(np.float32), vol > 0, {"source": f"adrenalmnist3d {size}"})
        rows.append({"ID": case_id, "Label": str(label), "Group": "", "status": "ok", "reason": "", "file": ""})
    write_csv(folder / CASES_CSV, pd.DataFrame(rows, columns=CASE_COLUMNS))
    return folder


def trad_features(path: Path, size: int = 28) -> pd.DataFrame:
    """pyradiomics' 107 default features (binWidth 25) of every case, cached in ``path``."""
    if path.exists():
        return pd.read_csv(path)
    import SimpleITK as sitk

    from napari_ssl_radiomics.core.radiomics import _float32_extractor, _quiet

    _quiet()
    extractor = _float32_extractor({"settings": {"binWidth": 25}})
    images, _labels, ids = load_pooled(size)
    rows = []
    for vol, case_id in zip(images, ids):
        image = sitk.GetImageFromArray(vol.astype(np.float32))
        mask = sitk.GetImageFromArray((vol > 0).astype(np.uint8))
        result = extractor.execute(image, mask)
        rows.append({"ID": case_id, **{k: float(v) for k, v in result.items() if k.startswith("original_")}})
    frame = pd.DataFrame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


PROBE = "svm"


def fold_aucs(x: np.ndarray, y: np.ndarray, repeats: int) -> np.ndarray:
    """AUC of each fold (repeats x 5 values) on features ``x`` (n, d).

    ``PROBE`` "svm": the paper's protocol (linear SVM, C picked on 20% of the training
    fold); "logistic": the health monitor's probe (standardised, L2 logistic regression,
    C = 0.1), about 20x faster, for screening.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from napari_ssl_radiomics.core.evaluate import LinearSVMCV, binary_auc
    from napari_ssl_radiomics.core.health import PROBE_C

    out = []
    for rep in range(repeats):
        for train, test in StratifiedKFold(5, shuffle=True, random_state=rep).split(x, y):
            if PROBE == "svm":
                model = LinearSVMCV(random_state=rep).fit(x[train], y[train])
            else:
                model = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=3000))
                model.fit(x[train], y[train])
            out.append(binary_auc(y[test] == 1, model.decision_function(x[test])))
    return np.asarray(out)


_TRAD_AUCS: dict = {}  # the traditional features' fold AUCs, computed once per call


def score(
    name: str,
    ssl: np.ndarray | None,
    trad: np.ndarray,
    y: np.ndarray,
    repeats: int,
    untrained_aucs: np.ndarray | None = None,
) -> dict:
    """One table row: rank, SSL-only AUC, trad+SSL AUC and its difference to trad (fold sd).

    With ``untrained_aucs`` (the untrained encoder's SSL-only fold AUCs, same folds), also
    the paired difference SSL-only − untrained and its fold sd. The row keeps its fold AUCs
    under ``ssl_folds``.
    """
    key = (id(trad), repeats, PROBE)
    if key not in _TRAD_AUCS:
        _TRAD_AUCS[key] = fold_aucs(trad, y, repeats)
    base = _TRAD_AUCS[key]
    row: dict = {"setting": name}
    if ssl is None:
        row.update(rank=float("nan"), ssl_auc=float("nan"), ssl_sd=float("nan"))
        row.update(both_auc=base.mean(), both_sd=base.std(), diff=0.0, diff_sd=0.0)
        return row
    only = fold_aucs(ssl, y, repeats)
    both = fold_aucs(np.hstack([trad, ssl]), y, repeats)
    from napari_ssl_radiomics.core.health import effective_rank

    row.update(rank=effective_rank(ssl), ssl_auc=only.mean(), ssl_sd=only.std(), ssl_folds=only.tolist())
    row.update(both_auc=both.mean(), both_sd=both.std(), diff=(both - base).mean(), diff_sd=(both - base).std())
    if untrained_aucs is not None:
        row.update(gain=(only - untrained_aucs).mean(), gain_sd=(only - untrained_aucs).std())
    return row


def untrained(cohort, cfg, seed: int) -> dict[str, np.ndarray]:
    """Head and backbone embeddings of the encoder as initialised with ``seed`` (no step)."""
    import torch

    from napari_ssl_radiomics.core.model import SimSiam3D

    torch.manual_seed(seed)
    model = SimSiam3D(cohort.channels, pred_hidden=cfg.pred_hidden, out_bn=cfg.out_bn).eval()
    return embed_layers(model, cohort.images)


def embed_layers(model, images: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Eval-mode head (dense8) and backbone (global pool) embeddings, each (n, 256)."""
    import torch

    head, pool = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch], dtype=np.float32))
            p = model.encoder.backbone(x)
            pool.append(p.numpy())
            head.append(model.encoder.head(p).numpy())
    return {"head": np.concatenate(head), "backbone": np.concatenate(pool)}


def train_run(cache: Path, out: Path, cfg) -> tuple[dict[str, np.ndarray], pd.DataFrame | None, float]:
    """Train (or reuse a finished run in ``out``), then embed every case; returns seconds trained."""
    from napari_ssl_radiomics.config import AugmentConfig
    from napari_ssl_radiomics.core.cache import load_prepared
    from napari_ssl_radiomics.core.events import drive
    from napari_ssl_radiomics.core.runs import RunFolder
    from napari_ssl_radiomics.core.train import load_model, train

    cohort = load_prepared(cache)
    start = time.perf_counter()
    run = RunFolder(out)
    done = run.steps_done() >= cfg.iterations
    if not done:
        resume = run.has_checkpoint

        def show(ev) -> None:
            if ev.kind == "health" or ev.level == "warning":
                print(f"  [{out.name}] {ev.message}", flush=True)

        from napari_ssl_radiomics.cli.train import _stop_on_signals

        # Ctrl-C or SIGTERM ends the step, writes a checkpoint and exits; a rerun resumes
        with _stop_on_signals() as flag:
            stop = lambda: flag[0] is not None  # noqa: E731
            result = drive(train(cohort, out, cfg, AugmentConfig(), resume=resume, stop=stop), show)
        if result.stopped:
            raise SystemExit(f"stopped at step {len(result.history)}; run the same command again to resume {out}")
    seconds = time.perf_counter() - start
    saved = out / "embeddings.npz"
    if saved.exists() and done:
        with np.load(saved) as z:
            feats = {k: z[k] for k in z.files}
    else:
        feats = embed_layers(load_model(out), cohort.images)
        np.savez(saved, **feats)
    return feats, run.health(), seconds


def parse_sets(items: list[str]):
    """``key=value`` overrides of TrainConfig, converted to the field's type."""
    from napari_ssl_radiomics.config import TrainConfig, _convert

    hints = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    types = {"int": int, "float": float, "str": str, "bool": bool}
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in hints:
            raise SystemExit(f"--set {item}: {key} is not a TrainConfig field")
        out[key] = _convert(value, types.get(str(hints[key]), str), key)
    return out


def machine() -> str:
    import torch

    from napari_ssl_radiomics.core.utils import cpu_model

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_model()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, {platform.python_version()}"


def fmt(row: dict) -> str:
    def pm(a: float, b: float) -> str:
        return "—" if a != a else f"{a:.3f} ± {b:.3f}"

    rank = "—" if row["rank"] != row["rank"] else f"{row['rank']:.1f}"
    diff = f"{row['diff']:+.3f} ± {row['diff_sd']:.3f}"
    gain = f"{row['gain']:+.3f} ± {row['gain_sd']:.3f}" if "gain" in row else "—"
    only = pm(row["ssl_auc"], row["ssl_sd"])
    return f"| {row['setting']} | {rank} | {only} | {gain} | {pm(row['both_auc'], row['both_sd'])} | {diff} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=28, choices=(28, 64))
    ap.add_argument("--modes", nargs="+", default=["none", "re", "se"], choices=("none", "re", "se"))
    ap.add_argument("--iterations", type=int, default=0, help="steps per mode (default 2000; --quick: 300)")
    ap.add_argument("--quick", action="store_true", help="300 steps per mode and 1 repeat of the CV")
    ap.add_argument("--repeats", type=int, default=0, help="CV repeats (default 3; --quick: 1)")
    ap.add_argument("--recipe", default="default", choices=("default", "paper"))
    ap.add_argument(
        "--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="other TrainConfig settings"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--tag", default="", help="name of this setting (run folders and the results JSON)")
    ap.add_argument("--both-layers", action="store_true", help="also score the layer that is not exported")
    ap.add_argument("--work", default=str(ROOT / "results" / "ssl_quality"))
    ap.add_argument(
        "--probe", default="svm", choices=("svm", "logistic"), help="svm: the paper's protocol; logistic: fast screen"
    )
    ap.add_argument("--train-only", action="store_true", help="train and embed, score nothing (ablation workers)")
    args = ap.parse_args()
    global PROBE
    PROBE = args.probe

    import torch

    from napari_ssl_radiomics.config import TrainConfig
    from napari_ssl_radiomics.core.cache import load_prepared
    from napari_ssl_radiomics.core.train import resolve_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    iterations = args.iterations or (300 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    work = Path(args.work)
    cache = build_cache(work / f"cache{args.size}", args.size)
    cohort = load_prepared(cache)
    trad = trad_features(work / f"trad{args.size}.csv", args.size).set_index("ID").loc[cohort.ids]
    trad_x = trad.to_numpy(dtype=float)
    trad_x = trad_x[:, np.isfinite(trad_x).all(axis=0) & (trad_x.std(axis=0) > 0)]
    y = np.asarray([int(v) for v in cohort.labels])
    tag = args.tag or f"{args.recipe}-{iterations}"
    if args.train_only:
        for mode in args.modes:
            cfg = TrainConfig(
                mode=mode,
                recipe=args.recipe,
                iterations=iterations,
                seed=args.seed,
                device="cpu",
                **parse_sets(args.set),
            )
            train_run(cache, work / "runs" / f"{tag}-{mode}", resolve_recipe(cfg))
        return
    rows = [score("traditional (pyradiomics) alone", None, trad_x, y, repeats)]
    t0 = time.perf_counter()
    for mode in args.modes:
        cfg = TrainConfig(
            mode=mode, recipe=args.recipe, iterations=iterations, seed=args.seed, device="cpu", **parse_sets(args.set)
        )
        cfg = resolve_recipe(cfg)
        layers = [cfg.export] + (
            [name for name in ("head", "backbone") if name != cfg.export] if args.both_layers else []
        )
        if mode == args.modes[0]:
            base = untrained(cohort, cfg, args.seed)
            rows += [score(f"untrained encoder ({layer})", base[layer], trad_x, y, repeats) for layer in layers]
            untrained_aucs = {row["setting"]: np.asarray(row["ssl_folds"]) for row in rows[-len(layers) :]}
        feats, health, seconds = train_run(cache, work / "runs" / f"{tag}-{mode}", cfg)
        for layer in layers:
            reference = untrained_aucs[f"untrained encoder ({layer})"]
            row = score(f"{mode} ({layer}), {iterations} steps", feats[layer], trad_x, y, repeats, reference)
            if health is not None and len(health):
                row["probe_set_rank_last"] = float(health["effective_rank"].iloc[-1])
            row["train_s"] = seconds
            rows.append(row)
        print(fmt(rows[-len(layers)]), flush=True)
    elapsed = time.perf_counter() - t0
    print(f"\nAdrenalMNIST3D {args.size}³, {len(y)} cases ({int(y.sum())} positive); recipe {args.recipe}", end="")
    print(f" {' '.join(args.set)}; {iterations} steps per mode; {repeats} repeat(s) of stratified 5-fold CV")
    print(f"machine: {machine()}; wall time {elapsed / 60:.1f} min\n")
    print("| setting | effective rank | SSL-only AUC | SSL-only − untrained | trad+SSL AUC | trad+SSL − trad |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(fmt(row))
    out = work / "results" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": machine(), "rows": rows}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
