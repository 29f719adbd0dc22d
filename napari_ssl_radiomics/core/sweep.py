"""Hyper-parameter sweeps of the paper's Fig. 4: AUC against k (clusters) and against m (batch).

Each value trains its own SE run (k = 0 means no SE module: vanilla 3DSiam), embeds the
cohort and scores the SSL features with the pipeline's evaluation at 100% of the labels.
As in the paper, the k sweep keeps the selected batch m fixed and draws a pool of
N = k × 10 candidates; the m sweep keeps k = 3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path

import pandas as pd

from ..config import PipelineConfig, validate
from .pipeline import StageEvent, StageState, case_labels, embed_stage, forward, train_stage
from .utils import read_table_csv, write_csv


def sweep_configs(cfg: PipelineConfig, name: str, values: list[int]) -> dict[int, object]:
    """The training config of each swept value, each checked (:func:`.config.validate`).

    Raises
    ------
    ValueError
        For a name that cannot be swept, or a value its setting refuses (named with the
        ``--sweep`` it came from), before any work: call it before the pipeline runs.
    """
    configs = {}
    for value in values:
        if name == "clusters":
            mode = "se" if value > 0 else "none"
            configs[value] = dataclasses.replace(cfg.train, mode=mode, clusters=max(value, 1), pool=max(value, 1) * 10)
        elif name == "batch_size":
            configs[value] = dataclasses.replace(cfg.train, mode="se", batch_size=value)
        else:
            raise ValueError(f"cannot sweep {name!r}; sweep clusters or batch_size")
        try:
            validate(configs[value])
        except ValueError as exc:
            raise ValueError(f"--sweep {name}={value}: {exc}") from None
    return configs


def sweep(cfg: PipelineConfig, name: str, values: list[int]) -> Generator[StageEvent, None, pd.DataFrame]:
    """Train, embed and evaluate one run per value; write ``sweep_<name>.csv`` and ``.png``.

    Needs the pipeline's ``cache/`` in ``cfg.out`` (run :func:`.pipeline.run` first).

    Returns
    -------
    DataFrame with columns ``name``, ``value``, ``auc_mean``, ``auc_sd``.
    """
    from .evaluate import evaluate_iter
    from .tables import combine

    out = Path(cfg.out)
    cache = out / "cache"
    folder = out / "sweep" / name
    state = StageState(out)
    labels = case_labels(out, cfg)
    eval_cfg = dataclasses.replace(cfg.evaluate, label_fractions=(1.0,))
    rows = []
    for value, train_cfg in sweep_configs(cfg, name, values).items():
        tag = f"sweep:{name}={value}"
        run_dir = yield from train_stage(train_cfg, cfg, cache, folder / f"{value}", state, tag)
        table = yield from embed_stage(cfg, run_dir, cache, folder / f"ssl_{value}.csv", state, tag + ":embed")
        tables = {"3DSiam": combine([labels, read_table_csv(table)])}  # IDs as text: "NA" is a case
        result = yield from forward(tag + ":evaluate", evaluate_iter(tables, eval_cfg))
        auc = result.results[result.results["metric"] == "auc"]["value"]
        rows.append({"name": name, "value": value, "auc_mean": auc.mean(), "auc_sd": auc.std(ddof=0)})
        yield StageEvent(tag, "done", message=f"AUC {auc.mean():.3f}")
    table = pd.DataFrame(rows)
    write_csv(out / f"sweep_{name}.csv", table)
    _plot(table, name, out / f"sweep_{name}.png")
    return table


def _plot(table: pd.DataFrame, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.errorbar(table["value"], table["auc_mean"], yerr=table["auc_sd"], marker="o", capsize=3)
    ax.set(
        xlabel="number of clusters k" if name == "clusters" else "selected batch size m",
        ylabel="fold-mean AUC ± sd (3DSiam features)",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
