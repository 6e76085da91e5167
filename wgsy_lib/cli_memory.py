"""`wgsy memory`: print the memory estimate for a model and run settings, without loading weights."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder or config.json (only the config is read)")
    parser.add_argument("--dtype", default="bf16", help="dtype of the weights and activations: bf16, fp16 or fp32 (default bf16)")
    parser.add_argument("--quantization", default=None, help="'4bit' for QLoRA weights (default: none)")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank; 0 for no adapter (default 16)")
    parser.add_argument("--target-modules", default="all-linear",
                        help="LoRA target modules: 'all-linear', comma-separated names, or a regular expression")
    parser.add_argument("--batch-size", type=int, default=1, help="examples per device batch (default 1)")
    parser.add_argument("--seq-len", type=int, default=256, help="text tokens per example, without image tokens (default 256)")
    parser.add_argument("--no-gradient-checkpointing", action="store_true", help="estimate without gradient checkpointing")
    parser.add_argument("--attn-implementation", default="eager", help="attention kernel: eager (default, used to train Gemma 3) or sdpa")
    parser.add_argument("--eval", action="store_true", help="estimate evaluation (generation) instead of training")
    parser.add_argument("--device", default=None, help="also check the estimate against this device's free memory (cuda, cpu)")
    parser.add_argument("--offload-folder", default=None, help="with --device: allow weights to spill to CPU RAM and this folder")


def run(args: argparse.Namespace) -> int:
    from .memory import check_fits, estimate_memory

    target_modules = args.target_modules
    if "," in target_modules:
        target_modules = [name.strip() for name in target_modules.split(",") if name.strip()]
    estimate = estimate_memory(
        args.model, dtype=args.dtype, quantization=args.quantization, lora_r=args.lora_r, target_modules=target_modules,
        batch_size=args.batch_size, seq_len=args.seq_len, gradient_checkpointing=not args.no_gradient_checkpointing,
        training=not args.eval, attn_implementation=args.attn_implementation, device=args.device,
    )
    print(estimate.format_table())
    if args.device is not None:
        check_fits(estimate, offload_folder=args.offload_folder)
        print("fits")
    return 0
