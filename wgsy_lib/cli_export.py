"""`wgsy export`: merge a trained adapter into its base model for transformers or vLLM."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="folder of the unquantised base model the adapter was trained on")
    parser.add_argument("--adapter", required=True, help="adapter folder of a 03_train run (contains adapter_config.json)")
    parser.add_argument("--out", required=True, help="new folder for the merged model, its processor and export_card.json")
    parser.add_argument("--dtype", default="bf16", help="dtype of the merged weights: bf16 (default) or fp32")
    parser.add_argument("--check-examples", default=None,
                        help="JSONL file in the training format (e.g. val.jsonl) whose first examples are compared "
                             "between base + adapter and the merged model (default: a synthetic image and two prompts)")
    parser.add_argument("--max-check-examples", type=int, default=3, help="number of examples to compare (default 3)")
    parser.add_argument("--device", default=None, help="device to merge and check on (default: cuda if available, else cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")


def run(args: argparse.Namespace) -> int:
    from .export import export_merged

    result = export_merged(
        args.base, args.adapter, args.out, dtype=args.dtype, check_examples=args.check_examples,
        max_check_examples=args.max_check_examples, device=args.device, overwrite=args.overwrite,
    )
    verdict = "agree" if result.agree else "DIFFER (see export_card.json)"
    print(f"merged model: {result.out_dir}")
    print(f"check: base + adapter and merged {verdict} on {len(result.checks)} example(s); "
          f"max |logit difference| {result.max_abs_logit_diff:.3g}")
    if result.ignored_by_unmerged_server:
        print(f"note: {len(result.ignored_by_unmerged_server)} adapter module(s) outside the language model take "
              "effect only in this merged model; vLLM ignores them in an unmerged adapter")
    return 0
