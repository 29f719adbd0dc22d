"""``ssl-radiomics train`` (3DSiam + RE/SE on a prepared cache) and ``ssl-radiomics embed``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from ..config import AugmentConfig, TrainConfig, add_arguments, from_arguments
from ..core.runs import CHECKPOINT, CONFIG_JSON, HEALTH_CSV, HISTORY_CSV, RunFolder


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``embed``."""
    p = sub.add_parser(
        "train",
        help="train 3DSiam (with the RE/SE imbalance module) on a prepared cache",
        description=(
            f"Train the 3D Siamese network on the crops of CACHE and write RUN/{CHECKPOINT}, "
            f"RUN/{CONFIG_JSON}, RUN/{HISTORY_CSV} and RUN/{HEALTH_CSV}. Ctrl-C or SIGTERM (timeout, SLURM, Kubernetes) saves a checkpoint after the step (exit 130 or 143); --resume "
            "continues the run. At step 0 and every --checkpoint-every steps a fixed probe set of "
            "--health-cases cases is embedded and checked for collapse (effective rank, first-PC share, "
            "spread: only these warn); when cases.csv has a Label column a linear probe of it is also reported. "
            "The labels are used only for this monitoring, never for training; the probe sees every case's "
            "label, test folds included, so tuning --lr or --iterations on it makes the cross-validated "
            "figures optimistic. --recipe paper gives the paper's literal recipe (Adam, lr 1e-2, constant, "
            "batch 6); a flag given explicitly overrides the recipe, even with the default's value."
        ),
    )
    p.add_argument("cache", help="prepared cache folder (ssl-radiomics prepare)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (its settings are reused; --iterations may be raised)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_arguments(p, TrainConfig, only=[n for n in TrainConfig.__dataclass_fields__ if n != "embed_batch_size"])
    add_arguments(p, AugmentConfig)
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "embed",
        help="write the learnt 256-d representation of every case as a CSV",
        description=(
            "Encode every prepared case of CACHE with the encoder of RUN; columns ID, ssl_000 ... ssl_255. "
            "CACHE must be prepared with the settings of the cache RUN was trained on. A <name>.json sidecar "
            "records the run, its checkpoint and the step it was saved at."
        ),
    )
    e.add_argument("run", help="run folder written by `ssl-radiomics train`")
    e.add_argument("cache", help="prepared cache folder")
    e.add_argument("--out", default="ssl_features.csv", help="output CSV (default: ssl_features.csv)")
    add_arguments(e, TrainConfig, only=["device", "embed_batch_size"])
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=run_embed)


#: exit status of a run stopped by a signal: 128 + its number (Ctrl-C 130, SIGTERM 143)
STOP_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[signal.Signals | None]]:
    """A cell that the first Ctrl-C (SIGINT) or SIGTERM sets to the signal received: the step
    finishes, then a checkpoint is written. SIGTERM is what ``timeout``, SLURM and Kubernetes
    send before they kill, so it is handled like Ctrl-C. A second signal interrupts at once
    (Ctrl-C raises KeyboardInterrupt; SIGTERM terminates)."""
    received: list[signal.Signals | None] = [None]
    previous: dict[signal.Signals, object] = {}
    again = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

    def handler(signum, frame):  # noqa: ARG001
        sig = signal.Signals(signum)
        received[0] = sig
        for s in previous:
            signal.signal(s, again[s])
        how = "Ctrl-C" if sig == signal.SIGINT else sig.name
        print(
            f"\n{sig.name} received: stopping after this step ({how} again to abort without saving)...", file=sys.stderr
        )

    with contextlib.suppress(ValueError):  # not the main thread: keep Python's defaults
        for sig in again:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.distributed import context
    from ..core.events import drive
    from ..core.train import TrainingDiverged, saved_config, train
    from . import CommandError

    out = Path(args.out)
    base_train, base_aug = saved_config(out) if args.resume else (TrainConfig(), AugmentConfig())
    cfg = from_arguments(base_train, args)
    aug = from_arguments(base_aug, args)
    # the history is written with each checkpoint
    done_before = RunFolder(out).steps_done() if args.resume else 0
    bar = tqdm(
        total=cfg.iterations,
        initial=max(0, done_before),
        unit="step",
        dynamic_ncols=True,
        disable=args.no_progress or not context().is_main,  # under torchrun: rank 0's bar only
        file=sys.stderr,
    )

    health: dict[str, str] = {}
    checks: list = []

    def show(event) -> None:
        if event.kind == "step":
            row = event.row
            bar.update(event.iteration - bar.n)
            bar.set_postfix(
                phase=row.phase,
                loss=f"{row.loss:.4f}",
                collapse=f"{row.collapse:.4f}",
                **health,
                sps=f"{row.samples_per_s:.2f}",
                refresh=False,
            )
        elif event.kind == "health":
            checks.append(event)
            health["rank"] = f"{event.health['effective_rank']:.1f}"
            if "probe_auc" in event.health:
                health["probe"] = f"{event.health['probe_auc']:.3f}"
            bar.write(event.message, file=sys.stderr)
        elif event.level == "warning":
            bar.write(f"warning: {event.message}", file=sys.stderr)

    with _stop_on_signals() as received:
        try:
            stop = lambda: received[0] is not None  # noqa: E731
            result = drive(train(args.cache, out, cfg, aug, resume=args.resume, stop=stop), show)
        except TrainingDiverged as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
    if result.stopped:
        sig = received[0] or signal.SIGINT
        print(
            f"stopped by {sig.name} at step {len(result.history)} of {cfg.iterations}; checkpoint saved to "
            f"{out / CHECKPOINT}.\nResume with: ssl-radiomics train {args.cache} --out {out} --resume",
            file=sys.stderr,
        )
        return STOP_STATUS.get(sig, 130)
    last = result.history.iloc[-1] if len(result.history) else None
    summary = f" (last loss {last['loss']:.4f}, collapse {last['collapse']:.4f})" if last is not None else ""
    print(f"trained {cfg.iterations} steps{summary}; run folder: {out}")
    if len(checks) > 1:
        print(health_summary(checks[0].health, checks[-1].health))
    return 0


def health_summary(first: dict[str, float], last: dict[str, float]) -> str:
    """The last check's figures against the untrained encoder's (step 0).

    One line; with a probe, a second line says why it must not steer tuning (:data:`health.PROBE_CAVEAT`).
    """
    from ..core.health import PROBE_CAVEAT

    text = (
        f"representation: effective rank {last['effective_rank']:.1f} (untrained encoder {first['effective_rank']:.1f})"
    )
    if "probe_auc" in last and "probe_auc" in first:
        text += (
            f", linear-probe AUC {last['probe_auc']:.3f} (untrained {first['probe_auc']:.3f}; "
            "labels used for this check only)"
        )
        text += f"\n{PROBE_CAVEAT}"
    return text


def run_embed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.embed import embed_iter, write_embedding
    from ..core.events import drive
    from ..core.utils import check_output_file

    cfg = from_arguments(TrainConfig(), args)
    check_output_file(args.out)  # before the encoding, not after it
    with tqdm(unit="case", dynamic_ncols=True, disable=args.no_progress, file=sys.stderr) as bar:

        def show(event) -> None:
            bar.total = event.total
            bar.update(event.index - bar.n)

        table = drive(embed_iter(args.run, args.cache, device=cfg.device, batch_size=cfg.embed_batch_size), show)
    _, sidecar = write_embedding(table, args.out, args.run, args.cache)
    print(f"wrote {len(table)} cases x {table.shape[1] - 1} features to {args.out} (provenance: {sidecar})")
    return 0
