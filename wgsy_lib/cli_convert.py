"""`wgsy convert PARAMS.yaml`: run notebooks/02_convert.ipynb headless with a parameter file."""

from __future__ import annotations

import argparse

from .convert import ConvertConfig
from .runner import run_stage_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params", help="parameter file of 02_convert (for example params/demo/02_convert.yaml)")
    parser.add_argument("--output", default=None,
                        help="executed notebook to write (default: 02_convert.ipynb in the parameters' output_dir)")


def run(args: argparse.Namespace) -> int:
    return 0 if run_stage_file("02_convert", ConvertConfig, args.params, args.output).ok else 1
