"""`wgsy labels TEXT...`: show how label text normalises, to check a labels.yaml edit."""

from __future__ import annotations

import argparse

from .labels import load_labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="label texts to normalise; with none, list the classes")
    parser.add_argument("--labels", default=None, help="labels.yaml to use (default: params/labels.yaml)")


def run(args: argparse.Namespace) -> int:
    labels = load_labels(args.labels)
    if not args.texts:
        for label_class in labels.classes:
            omim = f"OMIM {label_class.omim}" if label_class.omim else "no OMIM id"
            print(f"{label_class.name}\t{omim}\t{len(label_class.synonyms)} synonyms")
        return 0
    for text in args.texts:
        result = labels.normalize(text)
        suffix = f"\t({result.reason})" if result.reason else ""
        print(f"{text}\t->\t{result.label}{suffix}")
    return 0
