"""`wgsy evaluate PARAMS.yaml`: run notebooks/04_evaluate.ipynb headless, then export its HTML report."""

from __future__ import annotations

import argparse

from .evaluation import EvaluateConfig
from .report import export_html
from .runner import run_stage_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params", help="parameter file of 04_evaluate (for example params/demo/04_evaluate.yaml)")
    parser.add_argument("--output", default=None,
                        help="executed notebook to write (default: 04_evaluate.ipynb in the parameters' output_dir)")
    parser.add_argument("--with-code", action="store_true", help="keep code cells in the HTML report (default: hidden)")


def run(args: argparse.Namespace) -> int:
    result = run_stage_file("04_evaluate", EvaluateConfig, args.params, args.output)
    if not result.ok:
        return 1
    # Photos are never included from here; `wgsy report --include-photos` exists for internal reports.
    export_html(result.output, exclude_code=not args.with_code)
    return 0
