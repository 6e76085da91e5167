"""`wgsy convert PARAMS.yaml`: run notebooks/02_convert.ipynb headless with a parameter file."""

from __future__ import annotations

import argparse

from .convert import ConvertConfig
from .paths import resolve_path
from .runner import run_notebook


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params", help="parameter file of 02_convert (for example params/demo/02_convert.yaml)")
    parser.add_argument("--output", default=None,
                        help="executed notebook to write (default: 02_convert.ipynb in the parameters' output_dir)")


def run(args: argparse.Namespace) -> int:
    config = ConvertConfig.from_yaml(args.params)  # fail here, before starting a kernel, on a bad parameter
    output = resolve_path(args.output) if args.output else config.path("output_dir") / "02_convert.ipynb"
    result = run_notebook("02_convert", output, config.to_dict())
    return 0 if result.ok else 1
