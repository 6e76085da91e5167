"""`wgsy report EXECUTED.ipynb [--no-code]`: export an executed notebook as a shareable HTML report."""

from __future__ import annotations

import argparse

from .report import export_html


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("notebook", help="executed notebook (.ipynb) written by a run")
    parser.add_argument("--output", default=None, help="HTML file to write (default: beside the notebook, .html)")
    parser.add_argument("--no-code", action="store_true", help="hide code cells, keeping narrative, tables and plots")
    parser.add_argument("--include-photos", action="store_true",
                        help="keep photographs the notebook displayed with show_photos = True (removed by default)")


def run(args: argparse.Namespace) -> int:
    export_html(args.notebook, args.output, exclude_code=args.no_code, include_photos=args.include_photos)
    return 0
