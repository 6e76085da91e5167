"""`wgsy annotate PARAMS.yaml`: run notebooks/01_annotate.ipynb headless with a parameter file."""

from __future__ import annotations

import argparse

from .annotate import AnnotateConfig
from .runner import run_stage_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params", help="parameter file of 01_annotate (for example params/demo/01_annotate.yaml)")
    parser.add_argument("--output", default=None,
                        help="executed notebook to write (default: 01_annotate.ipynb in the parameters' output_dir)")


def run(args: argparse.Namespace) -> int:
    return 0 if run_stage_file("01_annotate", AnnotateConfig, args.params, args.output).ok else 1
