"""`wgsy grid GRID.yaml`: run the 03_train LoRA grid, one papermill run per cell."""

from __future__ import annotations

import argparse

from .grid import EXECUTORS, expand_cells, load_grid, run_grid, write_cell_parameters


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", help="grid file, e.g. params/grid.yaml or params/demo/grid.yaml")
    parser.add_argument("--only", action="append", metavar="CELL",
                        help="run only this cell (repeatable); names are printed by --list")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: one cell per GPU in parallel, or one after another on CPU; submitit-local: "
                             "submitit's local executor; slurm: one Slurm array task per cell (needs submitit)")
    parser.add_argument("--list", action="store_true",
                        help="write each cell's resolved parameter file and list the cells without running them")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop a cell that runs longer than this (default: no limit)")


def run(args: argparse.Namespace) -> int:
    spec = load_grid(args.grid)
    if args.list:
        for cell in expand_cells(spec):
            print(f"{cell.name}\t{write_cell_parameters(cell)}")
        return 0
    results = run_grid(spec, executor=args.executor, only=args.only, timeout_s=args.timeout)
    for result in results:
        where = f"\t{result.notebook}" if result.status == "failed" else ""
        print(f"{result.name}\t{result.status}\t{result.error}{where}")
    print(f"leaderboard: {spec.output_dir / 'leaderboard.csv'}")
    return 0 if all(result.status in ("done", "skipped") for result in results) else 1
