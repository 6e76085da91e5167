"""`wgsy tiny-model PATH` and `wgsy phantom OUT`: build the project's offline assets.

Both are synthetic: the tiny model is an untrained Gemma 3 network, the phantom cohort is drawn
faces. They exist to run and test the pipeline without downloads and say nothing about patients.
"""

from __future__ import annotations

import argparse


def add_tiny_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default=None,
                        help="folder to write the model to (default: build or reuse the cached copy and print its path)")
    parser.add_argument("--geometry", choices=("tiny", "medgemma"), default="tiny",
                        help="tiny: 64-pixel images, 16 image tokens; medgemma: MedGemma's 896 pixels and 256 tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace PATH if it already holds files")


def run_tiny_model(args: argparse.Namespace) -> int:
    from .tiny_model import build_tiny_model, tiny_model_path

    if args.path:
        path = build_tiny_model(args.path, geometry=args.geometry, seed=args.seed, overwrite=args.overwrite)
    else:
        path = tiny_model_path(geometry=args.geometry, seed=args.seed)
    print(path)
    return 0
