"""`wgsy demo`: run the whole pipeline on the phantom cohort and the tiny model."""

from __future__ import annotations

import argparse

from .demo import run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="folder for everything the demo writes (default: outputs/demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller cohort and fewer steps (a few minutes; what the test suite runs)")
    parser.add_argument("--fresh", action="store_true", help="delete the demo folder first instead of reusing it")


def run(args: argparse.Namespace) -> int:
    summary = run_demo(out_dir=args.out, quick=args.quick, fresh=args.fresh)
    print("\n".join(summary.lines()))
    return 0
