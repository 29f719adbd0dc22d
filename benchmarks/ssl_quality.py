"""Does self-supervision add anything? The study of issue 21 on AdrenalMNIST3D.

Trains each method on the pooled AdrenalMNIST3D cohort (train + val + test, 1584 volumes,
28³ or 64³) with the default recipe, embeds every case and scores, with the paper's protocol
(linear SVM, C picked on 20% of each training fold, stratified 5-fold CV x ``--repeats``):

rows
    traditional (pyradiomics) alone; the untrained encoder at initialisation and with its
    BatchNorm statistics recalibrated on the cohort (the stronger random baseline); vanilla
    3DSiam, 3DSiam + RE, 3DSiam + SE; the Rubik's-cube pretext task on the same encoder.
columns
    effective rank of the 1584 x 256 embeddings; SSL-only AUC and its paired difference to
    the better untrained row; trad+X AUC and its paired difference to trad alone; each
    difference with its 95% interval and p-value from the Nadeau-Bengio corrected
    resampled t-test (the project's ``core.compare.corrected_t``, k - 1 degrees of freedom);
    and RE/SE against vanilla on SSL-only AUC and on minor-class recall.

Labels are used only to score the features, never in training. Everything is cached under
``--work`` (default ``results/ssl_quality``, ignored by git): the cache, the pyradiomics
features, each run (checkpointed; Ctrl-C or SIGTERM stops it, the same command resumes)
and each row's fold scores, so an interrupted study resumes where it stopped.

    python benchmarks/ssl_quality.py                  # the whole table, 28³, 2000 steps per method
    python benchmarks/ssl_quality.py --quick          # 300 steps, 1 CV repeat
    python benchmarks/ssl_quality.py --train-only --methods se   # one run (e.g. one per core)
    python benchmarks/ssl_quality.py --readme         # also write the table into benchmarks/README.md
    python benchmarks/ssl_quality.py --methods none --set out_bn=true --tag outbn   # a candidate
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
from napari_ssl_radiomics.core.utils import atomic_open, write_csv, write_text  # noqa: E402

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
    write_csv(path, frame)
    return frame


PROBE = "svm"

#: the rows the study can hold: name in the table, and the training settings of each method
METHODS = {
    "untrained": ("untrained encoder (at initialisation)", None),
    "untrained-bn": ("untrained encoder (BatchNorm recalibrated)", None),
    "none": ("vanilla 3DSiam", {"mode": "none"}),
    "re": ("3DSiam + RE", {"mode": "re"}),
    "se": ("3DSiam + SE", {"mode": "se"}),
    "rubik": ("Rubik's cube (Zhuang et al. 2019)", {"mode": "none", "method": "rubik"}),
}
FOLDS = 5


def fold_scores(x: np.ndarray, y: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """AUC and minor-class recall (label 1) of each fold, repeats x 5 values, on features ``x`` (n, d).

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

    aucs, recalls = [], []
    for rep in range(repeats):
        for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=rep).split(x, y):
            if PROBE == "svm":
                model = LinearSVMCV(random_state=rep).fit(x[train], y[train])
            else:
                model = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=3000))
                model.fit(x[train], y[train])
            score = model.decision_function(x[test])
            aucs.append(binary_auc(y[test] == 1, score))
            recalls.append(float((score[y[test] == 1] > 0).mean()))
    return {"auc": aucs, "minor_recall": recalls}


def cached(path: Path, compute) -> dict:
    """``compute()``'s JSON-able result, kept in ``path`` (written whole) and reused."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    value = compute()
    write_text(path, json.dumps(value))
    return value


def row_scores(ssl: np.ndarray, trad: np.ndarray, y: np.ndarray, repeats: int) -> dict:
    """Rank, SSL-only and trad+SSL fold scores of one representation (n, 256)."""
    from napari_ssl_radiomics.core.health import effective_rank

    return {
        "rank": float(effective_rank(ssl)),
        "ssl": fold_scores(ssl, y, repeats),
        "both": fold_scores(np.hstack([trad, ssl]), y, repeats),
    }


def paired(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """Mean difference a - b over the same folds, its 95% interval and p (Nadeau-Bengio)."""
    from napari_ssl_radiomics.core.compare import corrected_t

    diffs = np.asarray(a) - np.asarray(b)
    return corrected_t(diffs, 1.0 / (FOLDS - 1), 0.95, df=FOLDS - 1)


def recalibrate_bn(model, images: np.ndarray, batch: int = 64):
    """``model`` with its BatchNorm running statistics re-estimated on ``images`` (no step).

    The stronger random baseline: at initialisation the running statistics are 0 and 1, so
    eval-mode activations are not normalised; a forward pass in train mode over the cohort
    with a cumulative average (momentum None) gives them the cohort's statistics.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    encoder = getattr(model, "encoder", model)
    encoder.train()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            encoder(torch.from_numpy(np.ascontiguousarray(images[start : start + batch], dtype=np.float32)))
    return model.eval()


def untrained_layers(cohort, cfg, seed: int, path: Path, recalibrated: bool) -> dict[str, np.ndarray]:
    """The untrained encoder's embeddings (:func:`untrained`, or BN-recalibrated), cached in ``path``."""
    import torch

    from napari_ssl_radiomics.core.model import SimSiam3D

    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    torch.manual_seed(seed)
    model = SimSiam3D(cohort.channels, pred_hidden=cfg.pred_hidden, out_bn=cfg.out_bn).eval()
    if recalibrated:
        recalibrate_bn(model, cohort.images)
    feats = embed_layers(model, cohort.images)
    save_npz(path, feats)
    return feats


def embed_layers(model, images: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Eval-mode head (dense8) and backbone (global pool) embeddings, each (n, 256)."""
    import torch

    head, pool = [], []
    encoder = getattr(model, "encoder", model)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch], dtype=np.float32))
            p = encoder.backbone(x)
            pool.append(p.numpy())
            head.append(encoder.head(p).numpy())
    return {"head": np.concatenate(head), "backbone": np.concatenate(pool)}


def train_run(cache: Path, out: Path, cfg, augment, stop_at: int = 0, partial: bool = False) -> tuple[dict, int]:
    """Train (resuming the run in ``out``) to ``stop_at`` steps (0: all of ``cfg.iterations``),
    then embed every case; returns the embeddings per layer and the step they come from.

    ``partial``: no training; embed the run's latest checkpoint as it is (a run cut short).
    """
    from napari_ssl_radiomics.core.cache import load_prepared
    from napari_ssl_radiomics.core.checkpoint import load_model
    from napari_ssl_radiomics.core.events import drive
    from napari_ssl_radiomics.core.runs import RunFolder
    from napari_ssl_radiomics.core.train import train

    cohort = load_prepared(cache)
    run = RunFolder(out)
    budget = stop_at or cfg.iterations
    if run.steps_done() < budget and not partial:
        # the budget is reached once its step's health check, if it has one, is recorded (Stop
        # would cut the check short)
        checked = cfg.health_cases > 0 and budget % cfg.checkpoint_every == 0
        reached = [False]

        def show(ev) -> None:
            if ev.kind == ("health" if checked else "step") and ev.iteration >= budget:
                reached[0] = True
            if ev.kind == "health" or ev.level == "warning":
                print(f"  [{out.name}] {ev.message}", flush=True)

        from napari_ssl_radiomics.cli.train import _stop_on_signals

        # Ctrl-C or SIGTERM ends the step, writes a checkpoint and exits; a rerun resumes
        with _stop_on_signals() as flag:
            stop = lambda: flag[0] is not None or reached[0]  # noqa: E731
            gen = train(cohort, out, cfg, augment, resume=run.has_checkpoint, stop=stop)
            drive(gen, show)
        if flag[0] is not None:
            raise SystemExit(f"stopped at step {run.steps_done()}; run the same command again to resume {out}")
    step = run.steps_done()
    if stop_at and step > stop_at and (out / f"embeddings-{stop_at}.npz").exists():
        step = stop_at  # the run went on after its embeddings at stop_at were taken: score those
    if step == 0:
        raise SystemExit(f"{out} has no checkpoint to embed; train it first (without --partial)")
    saved = out / f"embeddings-{step}.npz"
    if saved.exists():
        with np.load(saved) as z:
            return {k: z[k] for k in z.files}, step
    feats = embed_layers(load_model(out), cohort.images)
    save_npz(saved, feats)
    return feats, step


def save_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` whole or not at all: two runs that embed one checkpoint never leave half a file."""
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def parse_sets(items: list[str]) -> tuple[dict, dict]:
    """``key=value`` overrides of TrainConfig and of AugmentConfig (a range as ``low,high``),
    converted to the field's type; returns (train settings, augment settings)."""
    from napari_ssl_radiomics.config import AugmentConfig, TrainConfig, _convert

    sections = [{f.name: str(f.type) for f in dataclasses.fields(c)} for c in (TrainConfig, AugmentConfig)]
    types = {"int": int, "float": float, "str": str, "bool": bool}
    out: tuple[dict, dict] = ({}, {})
    for item in items:
        key, _, value = item.partition("=")
        found = [i for i, hints in enumerate(sections) if key in hints]
        if not found:
            raise SystemExit(f"--set {item}: {key} is neither a TrainConfig nor an AugmentConfig field")
        hint = sections[found[0]][key]
        if hint.startswith("tuple"):
            out[found[0]][key] = tuple(float(v) for v in value.split(","))
        else:
            out[found[0]][key] = _convert(value, types.get(hint, str), key)
    return out


def machine() -> str:
    import torch

    from napari_ssl_radiomics.core.utils import cpu_model

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_model()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, {platform.python_version()}"


def pm(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def diff_cell(a: list[float], b: list[float]) -> str:
    mean, low, high, p = paired(a, b)
    if p != p:
        return f"{mean:+.3f} (no spread)"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}], p {p:.2g}"


def tables(scores: dict[str, dict], trad: dict, names: dict[str, str], shares: dict[str, float]) -> list[str]:
    """The study's two markdown tables from each row's fold scores; ``shares``: each trained
    run's minor-class share among the cases it trained on after the warm-up."""
    base = [k for k in ("untrained-bn", "untrained") if k in scores]
    ref = max(base, key=lambda k: np.mean(scores[k]["ssl"]["auc"])) if base else None
    out = [
        f"| row | effective rank | SSL-only AUC | SSL-only − {names[ref] if ref else 'untrained'} "
        "| trad+X AUC | trad+X − trad |",
        "|---|---|---|---|---|---|",
        f"| traditional (pyradiomics) alone | — | — | — | {pm(trad['auc'])} | — |",
    ]
    for key, row in scores.items():
        gain = "—" if key == ref or ref is None else diff_cell(row["ssl"]["auc"], scores[ref]["ssl"]["auc"])
        out.append(
            f"| {names[key]} | {row['rank']:.1f} | {pm(row['ssl']['auc'])} | {gain} | {pm(row['both']['auc'])} | "
            f"{diff_cell(row['both']['auc'], trad['auc'])} |"
        )
    if "none" in scores:
        out += [
            "",
            "| against vanilla | minor share in trained batches | SSL-only AUC − vanilla "
            "| minor-class recall, SSL-only | − vanilla | trad+X | − vanilla |",
            "|---|---|---|---|---|---|---|",
        ]
        van = scores["none"]
        for key in [k for k in ("none", "re", "se", "rubik") if k in scores]:
            row = scores[key]
            share = f"{shares[key]:.3f}" if key in shares else "—"
            cells = [share, "—", pm(row["ssl"]["minor_recall"]), "—", pm(row["both"]["minor_recall"]), "—"]
            if key != "none":
                cells[1] = diff_cell(row["ssl"]["auc"], van["ssl"]["auc"])
                cells[3] = diff_cell(row["ssl"]["minor_recall"], van["ssl"]["minor_recall"])
                cells[5] = diff_cell(row["both"]["minor_recall"], van["both"]["minor_recall"])
            out.append(f"| {names[key]} | " + " | ".join(cells) + " |")
    return out


README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- ssl_quality table: begin -->", "<!-- ssl_quality table: end -->"


def write_readme(lines: list[str]) -> None:
    """Replace the table between the markers of benchmarks/README.md (appended when missing)."""
    text = README.read_text(encoding="utf-8")
    block = "\n".join([BEGIN, *lines, END])
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_text(README, text)


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=28, choices=(28, 64))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="the rows")
    ap.add_argument("--iterations", type=int, default=0, help="steps per method (default 2000; --quick: 300)")
    ap.add_argument("--quick", action="store_true", help="300 steps per method and 1 repeat of the CV")
    ap.add_argument("--repeats", type=int, default=0, help="CV repeats (default 3; --quick: 1)")
    ap.add_argument("--recipe", default="default", choices=("default", "paper"))
    ap.add_argument(
        "--set",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="other TrainConfig or AugmentConfig settings (a range as low,high)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--tag", default="", help="name of this setting (run folders and results; default s<seed>-<steps>)")
    ap.add_argument("--layer", default="", choices=("", "head", "backbone"), help="layer scored (default: exported)")
    ap.add_argument("--work", default=str(ROOT / "results" / "ssl_quality"))
    ap.add_argument(
        "--probe", default="svm", choices=("svm", "logistic"), help="svm: the paper's protocol; logistic: fast screen"
    )
    ap.add_argument("--train-only", action="store_true", help="train and embed, score nothing (one run per core)")
    ap.add_argument("--readme", action="store_true", help="write the table into benchmarks/README.md")
    ap.add_argument("--stop-at", type=int, default=0, help="stop each run at this step (schedule of --iterations)")
    ap.add_argument("--partial", action="store_true", help="train nothing: score each run's latest checkpoint")
    ap.add_argument(
        "--extra",
        nargs="*",
        default=[],
        metavar="TAG/METHOD[@STEP]=NAME",
        help="also show a row scored earlier (under this or another tag; its latest step's cached scores unless "
        "@STEP is given), named NAME",
    )
    return ap.parse_args(argv)


def extra_row(work: Path, item: str, suffix: str) -> tuple[dict, str]:
    """The cached scores of ``TAG/METHOD[@STEP]=NAME`` (at its latest step unless STEP is
    given), and its name in the table."""
    spec, _, name = item.partition("=")
    spec, _, step = spec.partition("@")
    tag, _, method = spec.partition("/")
    found = sorted(
        (work / "scores" / tag).glob(f"{method}-{suffix}-step{step or '*'}.json"),
        key=lambda p: int(p.stem.rsplit("step", 1)[1]),
    )
    if not name or not found:
        raise SystemExit(
            f"--extra {item}: give TAG/METHOD[@STEP]=NAME of a row scored with --tag {tag} --methods {method}"
        )
    return json.loads(found[-1].read_text(encoding="utf-8")), name


def batch_shares(work: Path, tag: str, methods: list[str], labels: pd.Series) -> dict[str, float]:
    """Each trained run's minor-class share among the cases it trained on (``core.report``'s
    batch balance), by method; ``labels``: class per case ID."""
    from napari_ssl_radiomics.core.report import batch_balance

    runs = {m: work / "runs" / f"{tag}-{m}" for m in methods}
    runs = {m: run for m, run in runs.items() if (run / "history.csv").exists()}
    if not runs:
        return {}
    balance = batch_balance(runs, labels)
    return dict(zip(balance["mode"], balance["batches"]))


def representation(method: str, args, cohort, cache: Path, work: Path, tag: str, iterations: int) -> tuple[dict, int]:
    """The method's (n, 256) embeddings per layer, trained (resumed) or untrained, cached; and
    the step they come from (0: untrained)."""
    from napari_ssl_radiomics.config import AugmentConfig, TrainConfig
    from napari_ssl_radiomics.core.train import resolve_recipe

    settings = METHODS[method][1]
    base = dict(recipe=args.recipe, iterations=iterations, seed=args.seed, device="cpu")
    train_sets, augment_sets = parse_sets(args.set)
    cfg = resolve_recipe(TrainConfig(**{**base, **(settings or {}), **train_sets}))
    if settings is None:
        path = work / "runs" / f"{tag}-{method}" / "embeddings.npz"
        return untrained_layers(cohort, cfg, args.seed, path, recalibrated=method == "untrained-bn"), 0
    augment = AugmentConfig(**augment_sets)
    return train_run(cache, work / "runs" / f"{tag}-{method}", cfg, augment, args.stop_at, args.partial)


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    global PROBE
    PROBE = args.probe
    import torch

    from napari_ssl_radiomics.core.cache import load_prepared

    if args.threads:
        torch.set_num_threads(args.threads)
    iterations = args.iterations or (300 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    tag = args.tag or f"s{args.seed}-{iterations}"
    work = Path(args.work)
    cache = build_cache(work / f"cache{args.size}", args.size)
    cohort = load_prepared(cache)
    if args.train_only:
        for method in args.methods:
            representation(method, args, cohort, cache, work, tag, iterations)
        return
    trad_x = trad_features(work / f"trad{args.size}.csv", args.size).set_index("ID").loc[cohort.ids]
    trad_x = trad_x.to_numpy(dtype=float)
    trad_x = trad_x[:, np.isfinite(trad_x).all(axis=0) & (trad_x.std(axis=0) > 0)]
    y = np.asarray([int(v) for v in cohort.labels])
    layer = args.layer or "head"
    key = f"{PROBE}-r{repeats}"
    t0 = time.perf_counter()
    trad = cached(work / "scores" / f"trad{args.size}-{key}.json", lambda: fold_scores(trad_x, y, repeats))
    scores = {}
    names = {k: v[0] for k, v in METHODS.items()}
    for method in args.methods:
        feats, step = representation(method, args, cohort, cache, work, tag, iterations)
        path = work / "scores" / tag / f"{method}-{layer}-{key}-step{step}.json"
        scores[method] = cached(path, lambda x=feats[layer]: row_scores(x, trad_x, y, repeats))
        if 0 < step < (args.stop_at or iterations):
            names[method] += f", **stopped at step {step} of {iterations}**"
        print(f"scored {names[method]}", flush=True)
    for item in args.extra:
        scores[item], names[item] = extra_row(work, item, f"{layer}-{key}")
    shares = batch_shares(work, tag, [m for m in args.methods if METHODS[m][1]], pd.Series(y, index=cohort.ids))
    lines = [
        f"AdrenalMNIST3D {args.size}³, {len(y)} cases ({int(y.sum())} positive, the minor class); recipe "
        f"{args.recipe} {' '.join(args.set)}; {iterations} steps per method, seed {args.seed}; layer {layer}; "
        f"{PROBE} probe, {repeats} repeat(s) of stratified {FOLDS}-fold CV; differences paired over the same "
        f"folds, 95% interval and p from the Nadeau–Bengio corrected t-test ({FOLDS - 1} degrees of freedom).",
        f"Machine: {machine()}; scoring wall time {(time.perf_counter() - t0) / 60:.1f} min.",
        "",
        *tables(scores, trad, names, shares),
    ]
    if "none" in scores:
        lines += [
            "",
            f"Minor share in trained batches: the minor class's share of the cases each run trained on after "
            f"the vanilla warm-up, each counted by its loss weight (RE) over the whole run so far; the "
            f"cohort's is {y.mean():.3f}. SE balances the k-means clusters of each pool; were they the "
            f"classes, its share would approach 0.5.",
        ]
    print("\n".join(lines))
    out = work / "results" / f"{tag}-{layer}-{key}.json"
    record = {"args": vars(args), "machine": machine(), "trad": trad, "rows": scores, "table": lines}
    write_text(out, json.dumps(record, indent=1))
    if args.readme:
        write_readme(lines)


if __name__ == "__main__":
    main()
