"""The `wgsy` command: thin wrappers over the library and papermill for the common runs.

Each subcommand lives in the module that owns its logic and is registered here by name, so that
`wgsy --help` starts fast (nothing heavy is imported until a subcommand runs).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import WgsyError
from .log import setup_logging

logger = logging.getLogger(__name__)

# name -> (module, function that adds the subcommand's arguments, function that runs it, help)
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {}


def register(name: str, module: str, help_text: str, *, add_arguments: str = "add_arguments",
             run: str = "run") -> None:
    SUBCOMMANDS[name] = (module, add_arguments, run, help_text)


register("demo", "wgsy_lib.cli_demo", "run the whole pipeline on the phantom cohort and the tiny model")
register("labels", "wgsy_lib.cli_labels", "normalise label text through params/labels.yaml")
register("annotate", "wgsy_lib.cli_annotate", "run 01_annotate headless: HPO-coded feature annotation of a cohort")
register("convert", "wgsy_lib.cli_convert", "run 02_convert headless: manifest to train/val/test JSONL and data card")
register("tiny-model", "wgsy_lib.cli_assets", "build the tiny untrained Gemma 3 model used by tests and the demo",
         add_arguments="add_tiny_model_arguments", run="run_tiny_model")
register("phantom", "wgsy_lib.cli_assets", "draw the synthetic phantom face cohort used by tests and the demo",
         add_arguments="add_phantom_arguments", run="run_phantom")
register("import", "wgsy_lib.cli_cohort", "build a cohort manifest from folders, UTKFace or legacy files",
         add_arguments="add_import_arguments", run="run_import")
register("validate", "wgsy_lib.cli_cohort", "check a cohort manifest against its photos",
         add_arguments="add_validate_arguments", run="run_validate")
register("grid", "wgsy_lib.cli_grid", "run the 03_train LoRA grid: one papermill run per cell")
register("evaluate", "wgsy_lib.cli_evaluate", "run 04_evaluate headless and write its HTML report")
register("report", "wgsy_lib.cli_report", "export an executed notebook as an HTML report without patient photos")
register("export", "wgsy_lib.cli_export", "merge a LoRA adapter into its base model for serving (bf16 or fp32)")
register("memory", "wgsy_lib.cli_memory", "estimate the memory a training or evaluation run needs, from config.json alone")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wgsy", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=None, help="logging level (default: WGSY_LOG_LEVEL or INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, add_arguments, _run, help_text) in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        getattr(importlib.import_module(module), add_arguments)(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    module, _add, run, _help = SUBCOMMANDS[args.command]
    try:
        result = getattr(importlib.import_module(module), run)(args)
    except WgsyError as error:
        # A user's mistake: the message says what to do, so a traceback would only hide it.
        print(f"wgsy {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
