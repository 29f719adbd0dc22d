"""``ssl-radiomics demo``, ``run`` and ``config``: the whole experiment from one config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ClusterConfig, PipelineConfig, add_arguments, commented_yaml, from_arguments, load_yaml


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``, ``run`` and ``config``."""
    demo = sub.add_parser(
        "demo",
        help="the paper's experiment on the built-in sample cohort, with a report",
        description="Sample, prepare, train 3DSiam (none, RE, SE), embed, extract radiomics, "
        "train the supervised baseline, evaluate Table 2's rows at 100%% and 50%% labels, report.",
    )
    demo.add_argument("--out", default="results", help="output folder (default: results)")
    demo.add_argument("--full", action="store_true", help="the paper's sizes (96³ crops, 2000 iterations): for a GPU")
    demo.add_argument("--device", default=None, help="auto, cuda or cpu (default: auto)")
    demo.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="also sweep clusters=... or batch_size=... (paper Fig. 4)",
    )
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="the whole pipeline on a cohort from one config file")
    run.add_argument("config", type=Path, help="YAML config (see `ssl-radiomics config`)")
    run.add_argument("--out", default=None, help="output folder (overrides the config's)")
    run.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="sweep clusters=0,2,3,4,5 or batch_size=2,4,6,8 (paper Fig. 4)",
    )
    add_arguments(run, ClusterConfig)
    run.set_defaults(func=_run)

    config = sub.add_parser("config", help="print the default config, commented")
    config.add_argument("--out", type=Path, default=None, help="write it to this file instead")
    config.set_defaults(func=_config)


def _demo(args: argparse.Namespace) -> int:
    from ..core.pipeline import demo_config

    cfg = demo_config(args.out, full=args.full)
    if args.device:
        cfg.train.device = args.device
    return _execute(cfg, args.sweep)


def _run(args: argparse.Namespace) -> int:
    if not args.config.exists():
        raise FileNotFoundError(
            f"config file {args.config} not found; `ssl-radiomics config --out {args.config}` writes a default one"
        )
    cfg = read_config(args.config)
    if args.out:
        cfg.out = args.out
    cfg.cluster = from_arguments(cfg.cluster, args)
    return _execute(cfg, args.sweep)


def read_config(path: Path) -> PipelineConfig:
    """Read a pipeline config, refusing an empty file and naming the line of a syntax error."""
    import yaml

    from . import CommandError

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not UTF-8 text; save the config as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "not valid YAML"
        raise CommandError(
            f"{path}{where}: {problem} (YAML syntax); check the indentation, colons and quotes there"
        ) from None
    except yaml.YAMLError as exc:
        raise CommandError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        raise CommandError(
            f"{path} holds no settings; `ssl-radiomics config --out {path}` writes the default config to edit "
            "(`ssl-radiomics demo` runs the built-in example)"
        )
    if not isinstance(data, dict):
        raise CommandError(f"{path}: a config file must be a mapping of settings (cohort:, out:, train:, ...)")
    return load_yaml(path)


def _config(args: argparse.Namespace) -> int:
    text = commented_yaml(PipelineConfig())
    if args.out:
        from ..core.utils import write_text

        write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def parse_sweep(items: list[str]) -> list[tuple[str, list[int]]]:
    """``["clusters=0,2,3"]`` -> ``[("clusters", [0, 2, 3])]``; only the paper's two sweeps."""
    sweeps = []
    for item in items:
        name, _, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in ("clusters", "batch_size") or not values:
            raise ValueError(f"--sweep {item!r}: use clusters=0,2,3,4,5 or batch_size=2,4,6,8")
        try:
            sweeps.append((name, [int(v) for v in values.split(",") if v.strip()]))
        except ValueError:
            raise ValueError(f"--sweep {item!r}: the values must be whole numbers") from None
    return sweeps


def _execute(cfg: PipelineConfig, sweep_items: list[str]) -> int:
    import time

    from ..core import pipeline
    from ..core.sweep import sweep, sweep_configs

    sweeps = parse_sweep(sweep_items)
    for name, values in sweeps:  # every swept value checked before any work
        sweep_configs(cfg, name, values)
    start = time.perf_counter()
    result = _consume(pipeline.run(cfg))
    for name, values in sweeps:
        table = _consume(sweep(cfg, name, values))
        print(table.to_string(index=False))
    print(f"done in {time.perf_counter() - start:.0f} s: report {result.report}")
    return 0


def _consume(gen):
    """Show a progress bar per stage; return the generator's value."""
    from tqdm import tqdm

    from ..core.events import drive

    bars: dict[str, tqdm] = {}

    def close() -> None:
        for bar in bars.values():
            bar.close()
        bars.clear()

    def show(event) -> None:
        if event.stage not in bars or event.status in ("start", "cached"):
            close()
        if event.status == "cached":
            tqdm.write(f"{event.stage}: unchanged, reused ({event.message})")
        elif event.status == "warning":
            tqdm.write(f"{event.stage}: warning: {event.message}")
        elif event.status in ("start", "progress"):
            bar = bars.get(event.stage)
            if bar is None:
                bar = bars[event.stage] = tqdm(
                    total=event.total or None, desc=event.stage, unit="", leave=True, dynamic_ncols=True
                )
            if event.total and bar.total != event.total:
                bar.total = event.total
            bar.n = event.index
            if event.message and event.status == "progress":
                bar.set_postfix_str(event.message[:60], refresh=False)
            bar.refresh()
        elif event.status == "done":
            if event.stage in bars:
                bar = bars[event.stage]
                bar.n = bar.total or event.index
            close()
            tqdm.write(f"{event.stage}: done {event.message}")

    try:
        return drive(gen, show)
    finally:
        close()
