"""Training precision: bf16 where the hardware has it, fp32 otherwise, fp16 only on request.

Gemma 3 overflows in fp16: activations exceed fp16's maximum (65504), and training then logs a NaN
or zero loss and the model writes empty output. GPUs without bf16 (V100, T4) therefore train in
fp32 by default. fp16 mixed precision remains available behind `allow_fp16=True` for users whose
GPU is too small for fp32, with a warning and `NonFiniteLossGuard`, which stops the run at the first
non-finite logged loss instead of letting it save a broken adapter.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import TrainerCallback

from .errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32", "fp16")
# Keys of the Trainer's log dictionary that hold a loss.
LOSS_KEYS = ("loss", "train_loss", "eval_loss")


@dataclass(frozen=True)
class Precision:
    """The dtype to load weights in and the Trainer's mixed-precision flags, with the reason."""

    name: str  # "bf16", "fp32" or "fp16"
    dtype: torch.dtype  # dtype of the loaded weights
    bf16: bool  # TrainingArguments.bf16
    fp16: bool  # TrainingArguments.fp16
    reason: str
    needs_loss_guard: bool

    def trainer_flags(self) -> dict[str, bool]:
        """Return the `bf16` and `fp16` arguments for TrainingArguments / SFTConfig."""
        return {"bf16": self.bf16, "fp16": self.fp16}


def device_supports_bf16(device: str | torch.device) -> bool:
    """Return True when `device` computes in bf16 at full speed (CUDA compute capability 8.0+)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


def resolve_precision(device: str | torch.device, requested: str = "auto", *, allow_fp16: bool = False) -> Precision:
    """Choose the training precision for `device` and log why.

    `requested` is "auto" (bf16 where supported, else fp32), "bf16", "fp32" or "fp16". "fp16" raises
    ConfigError unless `allow_fp16` is True, because Gemma 3 overflows in fp16. CPUs train in fp32:
    bf16 on a CPU is slower than fp32 on most processors and exists only for memory.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"precision is {requested!r}; expected one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    has_bf16 = device_supports_bf16(device)

    if requested == "fp16":
        return _fp16_precision(device, allow_fp16=allow_fp16, has_bf16=has_bf16)
    if requested == "bf16" and not has_bf16:
        raise ConfigError(
            f"precision is 'bf16' but {_describe(device)} has no bf16 support; set precision to 'auto' or "
            "'fp32' (or 'fp16' with allow_fp16=True, which may overflow in Gemma 3)"
        )

    if requested == "fp32" or not has_bf16:
        reason = "requested" if requested == "fp32" else f"{_describe(device)} has no bf16 support and fp16 overflows in Gemma 3"
        precision = Precision("fp32", torch.float32, False, False, f"fp32 because {reason}", False)
    else:
        reason = "requested" if requested == "bf16" else f"{_describe(device)} supports it"
        precision = Precision("bf16", torch.bfloat16, True, False, f"bf16 because {reason}", False)
    logger.info("precision: %s", precision.reason)
    return precision


def _fp16_precision(device: torch.device, *, allow_fp16: bool, has_bf16: bool) -> Precision:
    if not allow_fp16:
        raise ConfigError(
            "precision is 'fp16', which overflows in Gemma 3 (NaN or zero loss, empty output); use 'auto' "
            "(bf16 where supported, else fp32), or set allow_fp16=True to accept the risk; the run then "
            "stops at the first NaN or infinite loss"
        )
    if device.type != "cuda":
        raise ConfigError(f"precision 'fp16' needs a CUDA GPU, but the device is {_describe(device)}; use 'auto' or 'fp32'")
    hint = " although this GPU supports bf16, which is safer" if has_bf16 else ""
    logger.warning(
        "precision: fp16 mixed precision by explicit request (allow_fp16=True)%s. Gemma 3 is known to overflow "
        "in fp16; every logged loss is checked and the run stops at the first NaN or infinite value.", hint
    )
    return Precision("fp16", torch.float16, False, True, "fp16 because allow_fp16=True was set", True)


def _describe(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"GPU {index} ({torch.cuda.get_device_name(index)})"
    return f"device {device}"


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
