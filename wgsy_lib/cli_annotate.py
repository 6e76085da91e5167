"""`wgsy annotate PARAMS.yaml`: run notebooks/01_annotate.ipynb headless with a parameter file."""

from __future__ import annotations

import argparse

from .annotate import AnnotateConfig
from .paths import resolve_path
from .runner import run_notebook


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params", help="parameter file of 01_annotate (for example params/demo/01_annotate.yaml)")
    parser.add_argument("--output", default=None,
                        help="executed notebook to write (default: 01_annotate.ipynb in the parameters' output_dir)")


def run(args: argparse.Namespace) -> int:
    config = AnnotateConfig.from_yaml(args.params)  # fail here, before starting a kernel, on a bad parameter
    output = resolve_path(args.output) if args.output else config.path("output_dir") / "01_annotate.ipynb"
    result = run_notebook("01_annotate", output, config.to_dict())
    return 0 if result.ok else 1
