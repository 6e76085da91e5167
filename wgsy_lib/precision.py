"""fp16 training behind an explicit override, and a guard that stops a run at a NaN loss.

Gemma 3 overflows in fp16: activations exceed fp16's maximum (65504), and training then logs a NaN
or zero loss and the model writes empty output. `wgsy_lib.models.choose_dtype` is the one place
that picks the dtype (bf16 where the GPU supports it, fp32 otherwise) and rejects fp16 for Gemma 3.
This module adds the way around that rejection for users whose GPU (V100, T4) is too small for
fp32: `fp16_override` returns fp16 only when `allow_fp16=True` is set, with a warning, and
`NonFiniteLossGuard` then stops the run at the first non-finite logged loss instead of letting it
save a broken adapter.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from transformers import TrainerCallback

from .errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

# Keys of the Trainer's log dictionary that contain a loss.
LOSS_KEYS = ("loss", "train_loss", "eval_loss")


def fp16_override(requested: str, *, allow_fp16: bool, device: str) -> torch.dtype | None:
    """Return torch.float16 if fp16 is requested and explicitly allowed, else None.

    None means "not an fp16 request": the caller then asks `models.choose_dtype`. An fp16 request
    without `allow_fp16` raises ConfigError naming the override, and fp16 off CUDA raises too.
    With the override, the caller must train with `fp16=True` and add `NonFiniteLossGuard`.
    """
    if requested != "fp16":
        return None
    if not allow_fp16:
        raise ConfigError(
            "dtype is 'fp16', which overflows in Gemma 3 (NaN or zero loss, empty output); set dtype to 'auto' "
            "(bf16 where the GPU supports it, else fp32), or set allow_fp16 to true to accept the risk; the run "
            "then stops at the first NaN or infinite loss"
        )
    if torch.device(device).type != "cuda":
        raise ConfigError(f"dtype 'fp16' with allow_fp16 needs a CUDA GPU, but the device is {device}; set dtype to 'auto' or 'fp32'")

    bf16_hint = ""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        bf16_hint = " although this GPU supports bf16, which does not overflow"
    logger.warning(
        "dtype fp16 by explicit request (allow_fp16=true)%s. Gemma 3 is known to overflow in fp16; every "
        "logged loss is checked and the run stops at the first NaN or infinite value.", bf16_hint
    )
    return torch.float16


class NonFiniteLossGuard(TrainerCallback):
    """Stop training at the first logged loss that is NaN or infinite, naming the step.

    It raises ModelError from `on_log`, which ends `trainer.train()` with that error, so the run exits
    non-zero and no adapter is saved as if training had succeeded. The Trainer's default
    `logging_nan_inf_filter=True` replaces a non-finite step loss with the running mean before it is
    logged (transformers 5.25, `Trainer._inner_training_loop`), which would hide the NaN, so the
    guard turns that filter off when training starts. A loss of exactly zero is logged as a warning
    once, because fp16 overflow can also show up that way; later zeros are only counted.
    """

    def __init__(self, *, precision: str = "fp16") -> None:
        self.precision = precision
        self.zero_losses = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if getattr(args, "logging_nan_inf_filter", False):
            logger.info("NaN guard: setting logging_nan_inf_filter=False so a NaN or infinite loss is logged, not averaged away")
            args.logging_nan_inf_filter = False

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        for key in LOSS_KEYS:
            value = (logs or {}).get(key)
            if value is None:
                continue
            check_loss(value, step=state.global_step, key=key, precision=self.precision, warn_zero=self.zero_losses == 0)
            if float(value) == 0.0:
                self.zero_losses += 1

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.zero_losses > 1:
            logger.warning("NaN guard: %d logged losses were exactly 0 under %s precision", self.zero_losses, self.precision)


def check_loss(value: float, *, step: int, key: str = "loss", precision: str = "fp16", warn_zero: bool = True) -> None:
    """Raise ModelError if `value` is NaN or infinite; warn if it is exactly zero."""
    value = float(value)
    if not math.isfinite(value):
        raise ModelError(
            f"training stopped at step {step}: logged {key} is {value} under {precision} precision. Gemma 3 "
            "overflows in fp16; rerun with precision 'fp32' (or 'bf16' on a GPU that supports it). No adapter "
            "was saved from this run; checkpoints written before this step may already be damaged."
        )
    if value == 0.0 and warn_zero:
        logger.warning(
            "step %d: logged %s is exactly 0 under %s precision; this often means an overflow or that every "
            "label was masked. Check the answer tokens reach the loss.", step, key, precision
        )
