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


def add_phantom_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="folder to write the cohort to (images, manifest.csv, annotations.jsonl, README.md)")
    parser.add_argument("--subjects-per-class", type=int, default=8, help="subjects drawn per class (default 8)")
    parser.add_argument("--photos-per-subject", type=int, nargs="+", default=[2, 4], metavar="N",
                        help="photos per subject: one number, or the fewest and most (default 2 4)")
    parser.add_argument("--expressivity", default="realistic",
                        help="subtle, realistic (default), exaggerated (the preset a tiny model can learn), or a gain")
    parser.add_argument("--image-size", type=int, default=192, help="photo side in pixels (default 192)")
    parser.add_argument("--seed", type=int, default=0, help="seed; the same seed gives byte-identical files")
    parser.add_argument("--duplicate-rate", type=float, default=0.03, help="share of photos planted again as duplicates")
    parser.add_argument("--workers", type=int, default=None, help="drawing processes (default: up to 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already holds files")


def run_phantom(args: argparse.Namespace) -> int:
    from .phantom import make_phantom_cohort

    photos = args.photos_per_subject
    cohort = make_phantom_cohort(
        args.out, subjects_per_class=args.subjects_per_class,
        photos_per_subject=photos[0] if len(photos) == 1 else tuple(photos), expressivity=args.expressivity,
        image_size=args.image_size, seed=args.seed, duplicate_rate=args.duplicate_rate, workers=args.workers,
        overwrite=args.overwrite)
    print(f"{cohort.manifest}\t{cohort.photos} photos of {cohort.subjects} subjects (synthetic)")
    return 0
