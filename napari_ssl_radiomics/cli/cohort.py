"""``ssl-radiomics sample`` and ``ssl-radiomics prepare``: the cohort's way into the cache."""

from __future__ import annotations

import argparse

from ..config import ClusterConfig, PrepareConfig, SampleConfig, add_arguments, from_arguments


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sample`` and ``prepare`` to the parser."""
    p = sub.add_parser(
        "sample",
        help="write the built-in synthetic cohort (NIfTI + manifest.csv)",
        description="Write the synthetic cohort: 3:1 phenotypes, 3 centres at 60/30/10 %% (the manifest's Centre "
        "column). Its cases are independent, so the manifest has no Group column and the folds are not grouped.",
    )
    p.add_argument("--out", required=True, help="output folder")
    add_arguments(p, SampleConfig)
    p.set_defaults(func=sample_command)

    p = sub.add_parser(
        "prepare",
        help="resample, crop and rescale a cohort into a cache",
        description="Prepare every case of a manifest CSV (or folder of image/mask pairs) into CACHE: "
        "crops/, cases.csv (ok, or why a case was skipped), prepare.json. "
        "A second run redoes only changed cases or settings.",
    )
    p.add_argument(
        "manifest",
        metavar="MANIFEST",
        help="manifest CSV (Image, Mask[, ID, Label, Group, MaskLabel]; Group: the patient) or folder",
    )
    p.add_argument("--out", required=True, metavar="CACHE", help="cache folder")
    add_arguments(p, PrepareConfig)
    add_arguments(p, ClusterConfig)
    p.set_defaults(func=prepare_command)


def sample_command(args: argparse.Namespace) -> int:
    from ..core.sample import write_sample_cohort
    from ..core.utils import check_output_folder

    cfg = from_arguments(SampleConfig(), args)
    check_output_folder(args.out)
    manifest = write_sample_cohort(args.out, cfg)
    print(f"wrote {cfg.cases} synthetic cases of {cfg.size}x{cfg.size}x{cfg.size} voxels and {manifest}")
    return 0


def prepare_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.cohort import load_cohort
    from ..core.events import drive
    from ..core.preprocess import prepare, summary
    from ..core.utils import check_output_folder

    cfg = from_arguments(PrepareConfig(), args)
    # What can be checked is checked before the progress bar starts, so errors come first.
    cohort = load_cohort(args.manifest)
    check_output_folder(args.out)
    events = []
    with tqdm(unit="case", desc="prepare", leave=False) as bar:

        def show(event) -> None:
            bar.total = event.total
            bar.update(1)
            events.append(event)
            if event.status == "skipped":
                bar.write(f"skipped {event.case_id}: {event.reason}")
            elif event.reason:
                bar.write(f"note {event.case_id}: {event.reason}")

        table = drive(prepare(cohort, cfg, args.out, from_arguments(ClusterConfig(), args)), show)
    print(f"{summary(table, events)}; cache: {args.out}")
    return 0 if (table["status"] == "ok").any() else 1
