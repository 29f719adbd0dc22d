"""The pipeline's report: ``report.md`` and a self-contained ``report.html``.

It reads what the pipeline left in its output folder (see :mod:`.pipeline`): the
evaluation (Table 2 layout, ROC curves), the training histories (loss, collapse metric,
which cases each step trained on), the SSL feature tables (UMAP by cluster and by label,
the feature-correlation density of the paper's Fig. 2) and the run metadata.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .runs import MODE_NAMES, RUNS_DIR, RunFolder, runs_in
from .runs import parse_ids as parse_ids  # the history's cells; re-exported where they were
from .utils import read_table_csv, write_text

FIGURES = "figures"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def training_curves(runs: dict[str, Path], path: Path) -> Path:
    """Loss and collapse metric against the step, one line per run; saved as PNG."""
    plt = _pyplot()
    fig, (ax_loss, ax_col) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_rubik = None  # the puzzle's loss (CE + BCE, from about 5) gets its own axis: Eq. 2 lies in [-1, 1]
    for name, run_dir in runs.items():
        folder = RunFolder(run_dir)
        hist = folder.history()
        ax = ax_loss
        if folder.method == "rubik":
            ax_rubik = ax_rubik or ax_loss.twinx()
            ax = ax_rubik
        style = "--" if ax is ax_rubik else "-"
        (line,) = ax_col.plot(hist["iteration"], hist["collapse"], style, label=name)
        loss = hist["loss"].rolling(10, min_periods=1).mean()
        ax.plot(hist["iteration"], loss, style, color=line.get_color(), label=name)  # one colour per run
    ax_loss.set(xlabel="step", ylabel="loss (Eq. 2, 10-step mean)", title="training loss")
    if ax_rubik is not None:
        ax_rubik.set_ylabel("Rubik's cube loss (CE + BCE), dashed")
        ax_rubik.legend(fontsize=8, loc="upper right")
    ax_col.axhline(1 / np.sqrt(256), color="grey", ls="--", lw=0.8, label="1/√256 (healthy)")
    ax_col.set(xlabel="step", ylabel="std of L2-normalised z", title="collapse metric", ylim=(0, None))
    if ax_loss.get_lines():
        ax_loss.legend(fontsize=8, loc="best" if ax_rubik is None else "upper left")
    ax_col.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def batch_balance(runs: dict[str, Path], labels: pd.Series) -> pd.DataFrame:
    """Share of the minority class among the cases each mode trained on.

    Parameters
    ----------
    runs : mode name -> run folder (with the run's history table holding ``selected_ids`` and ``weights``)
    labels : class per case ID

    Returns
    -------
    One row per mode: ``mode``, ``minority`` (the class), ``cohort`` (its share in the
    cohort), ``batches`` (its share among trained cases after the vanilla warm-up, each
    case counted by its loss weight).
    """
    counts = labels.value_counts()
    minority = counts.idxmin()
    rows = []
    for name, run_dir in runs.items():
        hist = RunFolder(run_dir).history()
        if "phase" in hist:
            hist = hist[hist["phase"] != "vanilla"] if (hist["phase"] != "vanilla").any() else hist
        hit = total = 0.0
        for ids, weights in zip(hist["selected_ids"], hist.get("weights", [None] * len(hist))):
            ids = parse_ids(ids)
            w = [float(v) for v in parse_ids(weights)] if weights is not None else []
            w = w if len(w) == len(ids) else [1.0] * len(ids)
            for case, weight in zip(ids, w):
                total += weight
                hit += weight * (labels.get(case) == minority)
        rows.append(
            {
                "mode": name,
                "minority": minority,
                "cohort": counts[minority] / counts.sum(),
                "batches": hit / total if total else np.nan,
            }
        )
    return pd.DataFrame(rows)


def balance_figure(balance: pd.DataFrame, path: Path) -> Path:
    """Bars of the minority share in the cohort and in each mode's training batches."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    names = ["cohort"] + list(balance["mode"])
    values = [balance["cohort"].iloc[0]] + list(balance["batches"])
    ax.bar(names, values, color=["grey"] + ["C0"] * len(balance))
    ax.axhline(0.5, color="k", ls=":", lw=0.8)
    ax.set(
        ylabel=f"share of class {balance['minority'].iloc[0]}", title="minority share in training batches", ylim=(0, 1)
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def representation_clusters(tables: dict[str, pd.DataFrame], k: int = 3, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``ID, UMAP_0, UMAP_1, cluster`` of each SSL table: :func:`.clusters.cluster_frame`, as the Clusters dock's."""
    from .clusters import cluster_frame

    return {name: cluster_frame(table, k, seed) for name, table in tables.items()}


def umap_figure(tables: dict[str, pd.DataFrame], labels: pd.Series, path: Path, k: int = 3, seed: int = 0) -> Path:
    """UMAP of each SSL table coloured by k-means cluster (left) and by label (right)."""
    frames = representation_clusters(tables, k, seed)
    plt = _pyplot()
    fig, axes = plt.subplots(len(tables), 2, figsize=(7, 3.2 * len(tables)), squeeze=False)
    for row, (name, frame) in enumerate(frames.items()):
        xy, clusters = frame[["UMAP_0", "UMAP_1"]].to_numpy(), frame["cluster"].to_numpy()
        y = frame["ID"].map(labels).astype(str)
        for ax, colour, title in ((axes[row, 0], clusters, "k-means cluster"), (axes[row, 1], y, "label")):
            for value in sorted(set(colour)):
                sel = np.asarray(colour) == value
                ax.scatter(xy[sel, 0], xy[sel, 1], s=12, label=str(value))
            ax.set(title=f"{name}: {title}", xticks=[], yticks=[])
            ax.legend(fontsize=7, markerscale=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def report_clusters_settings(cfg: Any = None) -> tuple[int, int]:
    """The report's k and seed: the run's ``train.clusters`` (at least 2; 3 when unset) and ``train.seed``."""
    train = getattr(cfg, "train", None)
    return max(2, getattr(train, "clusters", 3) or 3), int(getattr(train, "seed", 0) or 0)


def supervised_section(out: Path) -> tuple[str, str, list[Path], pd.DataFrame | None] | None:
    """Has the supervised baseline trained? Its loss per split and the convergence checks.

    Reads ``features/supervised_history.csv`` and ``supervised_diagnostics.csv`` (written by
    the pipeline's supervised stage); None when they are absent.
    """
    history_csv = out / "features" / "supervised_history.csv"
    checks_csv = out / "features" / "supervised_diagnostics.csv"
    if not (history_csv.exists() and checks_csv.exists()):
        return None
    history, checks = pd.read_csv(history_csv), pd.read_csv(checks_csv)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    for _, g in history.groupby("split"):
        window = max(1, len(g) // 20)
        ax.plot(g["iteration"], g["loss"].rolling(window, min_periods=1).mean(), lw=0.8, alpha=0.7)
    ax.set(xlabel="step", ylabel="weighted cross-entropy", title="supervised baseline: loss per split")
    fig.tight_layout()
    path = out / FIGURES / "supervised_loss.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    bad = checks[~checks["converged"].astype(bool)]
    if len(bad):
        text = (
            f"**Warning: the supervised baseline has not converged in {len(bad)} of {len(checks)} splits** "
            f'({bad["reason"].iloc[0]}). Its Table 2 row is a lower bound: do not read "SSL beats '
            'supervised" from it; give it more steps (supervised_iterations).'
        )
    else:
        text = f"The training loss fell and levelled off in all {len(checks)} splits."
    text += " Test-fold AUC is reported only; nothing is chosen on it."
    shown = ["repeat", "fold", "label_fraction", "iterations", "loss_start", "loss_end", "train_auc", "test_auc"]
    return ("Supervised baseline: has it trained?", text, [path], checks[shown + ["converged"]].round(3))


def _img_md(path: Path, out: Path) -> str:
    return f"![{path.stem}]({path.relative_to(out).as_posix()})"


def _img_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


#: the project's own measurement of the question Table 2 asks (benchmarks/README.md, issue 21)
MEASURED = (
    "*What we measured:* on AdrenalMNIST3D (1584 cases, 28³), at the paper's budget of 2000 steps no "
    "self-supervised encoder beat an untrained one with p < 0.05 (vanilla 3DSiam in fp32: +0.032 SSL-only "
    "AUC, p 0.18; +0.040, p 0.08, from the backbone layer; seed 1 only +0.006, p 0.77), and the learned features "
    "never added significantly to pyradiomics' (best +0.013, p 0.12); RE and SE did no better than vanilla at "
    "two seeds (SE −0.059, p 0.053, and +0.002, p 0.9), did not raise the minor class's recall, and the "
    "Rubik's cube was the weakest row (−0.071, p 0.012). Read this table's 3DSiam rows against that (the "
    "study and its caveats: benchmarks/README.md in the project)."
)


def write_report(out: str | Path, cfg: Any = None) -> Path:
    """Write ``report.md`` and ``report.html`` from a pipeline output folder; return the md path."""
    from .cache import read_cases
    from .health import report_section as health_report_section
    from .plots import correlation_density

    out = Path(out)
    figures = out / FIGURES
    figures.mkdir(exist_ok=True)
    sections: list[tuple[str, str, list[Path], pd.DataFrame | None]] = []

    evaluation = out / "evaluation"
    summary = (
        (evaluation / "summary.md").read_text(encoding="utf-8")
        if (evaluation / "summary.md").exists()
        else "(no evaluation)"
    )
    cases = read_cases(out / "cache")
    cases = cases[cases["status"] == "ok"]
    labels = pd.Series(cases["Label"].to_numpy(), index=cases["ID"].to_numpy())
    runs = runs_in(out / RUNS_DIR)
    # the health of each 3DSiam row's encoder goes right under Table 2, before its figures
    health = health_report_section(runs, MODE_NAMES)
    health_table = None
    if health is not None:
        health_title, health_text, _, health_table = health
        summary = f"{summary}\n\n### {health_title}\n\n{health_text}"
    summary = f"{summary}\n\n{MEASURED}"
    title = "Table 2: linear SVM, stratified cross-validation"
    sections.append((title, summary, sorted(evaluation.glob("*.png")), health_table))
    supervised = supervised_section(out)  # loss per split: is the baseline trained?
    if supervised is not None:
        sections.append(supervised)

    if runs:
        curves = training_curves(runs, figures / "training_curves.png")
        balance = batch_balance(runs, labels)
        bars = balance_figure(balance, figures / "batch_balance.png")
        text = (
            "Share of the minority class in the cohort and among the cases each mode trained on "
            "after the vanilla warm-up (RE counts each case by its loss weight). SE aims at 0.5."
        )
        sections.append(("Training: loss, collapse and batch balance", text, [curves, bars], balance.round(3)))

    ssl = {
        p.stem.removeprefix("ssl_"): read_table_csv(p)  # IDs as text: "NA" is a case
        for p in sorted((out / "features").glob("ssl_*.csv"))
    }
    if ssl:
        k, seed = report_clusters_settings(cfg)
        umap_png = umap_figure(ssl, labels, figures / "umap.png", k=k, seed=seed)
        named = {f"3DSiam ({m})": t.drop(columns="ID") for m, t in ssl.items()}
        corr = correlation_density(named, figures / "correlation_density.png")
        sections.append(("Representations: UMAP by k-means cluster and by label", "", [umap_png], None))
        sections.append(
            (
                "Feature correlation (paper, Fig. 2)",
                "Density of pairwise Pearson correlations between the 256 SSL features.",
                [corr],
                None,
            )
        )

    meta = json.loads((out / "versions.json").read_text(encoding="utf-8")) if (out / "versions.json").exists() else {}
    meta_text = "Config: `config.yaml`. Versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    sections.append(("Run", f"Date: {meta.get('date', '?')}. {meta_text}", [], None))

    md = ["# napari-ssl-radiomics report", ""]
    body = ["<h1>napari-ssl-radiomics report</h1>"]
    for title, text, images, table in sections:
        md += [f"## {title}", "", text, ""]
        body += [f"<h2>{html.escape(title)}</h2>", _markdown_to_html(text)]
        if table is not None:
            md += [markdown_table(table), ""]
            body.append(table.to_html(index=False, border=0))
        for image in images:
            md += [_img_md(image, out), ""]
            body.append(_img_html(image))
    write_text(out / "report.md", "\n".join(md))
    style = "body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}img{max-width:100%}"
    write_text(
        out / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>napari-ssl-radiomics report</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n",
    )
    return out / "report.md"


def markdown_table(table: pd.DataFrame) -> str:
    """A pipe table of ``table`` (no index; NaN as "–"), without pandas' optional tabulate."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "–" if value != value else f"{value:g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _markdown_to_html(text: str) -> str:
    """Enough markdown for the summary: pipe tables, headings and paragraphs."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows if not set(r) <= set("|-: ")]
            head, *rest = cells
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
            out.append("</table>")
            rows.clear()

    for line in text.splitlines():
        if line.strip().startswith("|"):
            rows.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 2)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)
