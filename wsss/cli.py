"""``glmix-wsss``: weakly-supervised semantic segmentation with GLNet slots.

Subcommands arrive with the WSSS issues (dataset generation, training,
pseudo-labels, scoring); each one listed by ``glmix-wsss --help`` works.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from glmix_viz import __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glmix-wsss", description=__doc__.splitlines()[0].strip("`: "))
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_subparsers(dest="command", metavar="COMMAND")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``glmix-wsss``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
