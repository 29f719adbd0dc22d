"""The ``ssl-radiomics`` command line: a thin face over :mod:`napari_ssl_radiomics.core`.

Each module here registers its subcommands with ``register(subparsers)`` and keeps its
heavy imports (torch, pyradiomics) inside the command functions, so that ``--help`` is fast.
Flags come from the config dataclasses (:mod:`napari_ssl_radiomics.config`). What a command
made (files written, summaries) is printed to stdout; progress bars, warnings and errors go
to stderr (the core's warnings through :mod:`logging`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__

MODULES = ("cohort", "train", "features", "pipeline")


class CommandError(Exception):
    """An error a user can act on: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="ssl-radiomics",
        description="Imbalance-aware self-supervised 3D radiomics (3DSiam + RE/SE) with pyradiomics.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    from ..core.lock import LockedError
    from ..core.utils import OutputError, describe_os_error

    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, ValueError, LockedError, OutputError) as exc:
        if args.verbose:
            raise
        print(f"ssl-radiomics {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # read-only, full disk, a file in the way: one line, not a traceback
        if args.verbose:
            raise
        print(f"ssl-radiomics {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ssl-radiomics {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
