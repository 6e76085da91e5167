"""Loading the base model, its processor and a LoRA adapter, shared by training and evaluation.

Every setting chosen automatically (device, dtype, attention implementation) is logged with its
reason. Hardware and paths are checked before any weights are read, so a wrong path or a missing
GPU fails in seconds instead of after a long download or load.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, ModelError
from .memory import offload_loading_kwargs
from .paths import resolve_path

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "bf16", "fp32", "fp16")
ATTENTION_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flash_attention_2")
_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
# A Hugging Face hub id: "owner/name" with no other slashes and no leading dot.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class ModelSource:
    """The source of a base model: a local folder, or a hub id read from the local cache or the hub."""

    name: str
    local_dir: Path | None
    model_type: str

    @property
    def is_gemma3(self) -> bool:
        return is_gemma3(self.model_type)


def is_gemma3(model_type: str) -> bool:
    """Return True for Gemma 3 and MedGemma configs ("gemma3", "gemma3_text")."""
    return model_type.startswith("gemma3")


def choose_device(requested: str = "auto") -> str:
    """Return the torch device type to train or evaluate on, logging why it was chosen."""
    if requested not in DEVICES:
        raise ConfigError(f"device {requested!r} is invalid; expected one of {', '.join(DEVICES)}")
    if requested == "auto":
        if torch.cuda.is_available():
            logger.info("device cuda: %d CUDA GPU(s) visible, using %s", torch.cuda.device_count(),
                        torch.cuda.get_device_name(0))
            return "cuda"
        if torch.backends.mps.is_available():
            logger.info("device mps: no CUDA GPU, Apple GPU available")
            return "mps"
        logger.info("device cpu: no CUDA or Apple GPU found (training is slow; fine for the tiny demo model)")
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was requested but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                         "install the CUDA build of torch with scripts/setup.sh on a GPU machine, or set device: cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ModelError("device 'mps' was requested but this machine has no Apple GPU available to torch; set device: cpu")
    logger.info("device %s: requested", requested)
    return requested


def choose_dtype(device: str, requested: str = "auto", *, model_type: str = "") -> torch.dtype:
    """Return the dtype to load weights in for `device`, logging the reason.

    `auto` picks bf16 on GPUs that support it and fp32 elsewhere. fp16 is rejected for Gemma 3,
    whose activations overflow fp16's range (NaN or zero loss, empty generations).
    """
    if requested not in DTYPES:
        raise ConfigError(f"dtype {requested!r} is invalid; expected one of {', '.join(DTYPES)}")

    if requested == "fp16" and is_gemma3(model_type):
        raise ConfigError(
            f"dtype 'fp16' is rejected for {model_type} models: Gemma 3 activations exceed fp16's range, "
            "which gives NaN or zero loss and empty generations; set dtype: bf16 (on GPUs that support it) or fp32"
        )
    if requested == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ModelError(f"dtype 'bf16' was requested but the GPU {torch.cuda.get_device_name(0)} does not support "
                         "bfloat16; set dtype: fp32 (or auto)")
    if requested != "auto":
        logger.info("dtype %s: requested", requested)
        return _TORCH_DTYPES[requested]

    if device == "cuda" and torch.cuda.is_bf16_supported():
        logger.info("dtype bf16: the GPU supports bfloat16 (half the memory of fp32, no fp16 overflow)")
        return torch.bfloat16
    if device == "cuda":
        logger.info("dtype fp32: the GPU does not support bfloat16, and fp16 overflows in Gemma 3")
        return torch.float32
    logger.info("dtype fp32: on %s, bf16 matrix products are slow or unsupported", device)
    return torch.float32


def choose_attention(requested: str = "auto", *, model_type: str, training: bool) -> str:
    """Return the attention implementation: eager for Gemma 3 training, sdpa otherwise."""
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation {requested!r} is invalid; expected one of "
                          f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if requested != "auto":
        if requested != "eager" and training and is_gemma3(model_type):
            logger.warning("attn_implementation %s for Gemma 3 training: Hugging Face recommends eager, because "
                           "Gemma 3's attention soft-capping and sliding windows differ under other kernels", requested)
        return requested
    if training and is_gemma3(model_type):
        logger.info("attention eager: recommended by Hugging Face for training Gemma 3")
        return "eager"
    logger.info("attention sdpa: PyTorch's fused attention")
    return "sdpa"


def quantization_config(load_in_4bit: bool, *, device: str, compute_dtype: torch.dtype) -> Any | None:
    """Return a 4-bit NF4 bitsandbytes config for QLoRA, or None; only CUDA GPUs are supported."""
    if not load_in_4bit:
        return None
    if device != "cuda":
        raise ModelError(f"load_in_4bit (QLoRA) needs a CUDA GPU, but the device is {device}; "
                         "set load_in_4bit: false, or run on a machine with an NVIDIA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("load_in_4bit (QLoRA) needs the bitsandbytes package, which is not installed; "
                         "install it with `pip install -e '.[gpu]'` or set load_in_4bit: false")
    from transformers import BitsAndBytesConfig

    logger.info("quantization: 4-bit NF4 with double quantization, compute dtype %s", compute_dtype)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=compute_dtype)


def locate_model(name_or_path: str, *, trust_remote_code: bool = False) -> ModelSource:
    """Check that the base model exists (a local folder, or a hub id) and read its model type.

    Raises ModelError naming the path when the folder or its config.json is missing. A hub id is
    accepted when the hub is reachable or the model is in the local cache; with HF_HUB_OFFLINE=1 and
    no cached copy, the error names that cause.
    """
    if not name_or_path:
        raise ConfigError("model_name_or_path is empty; set it to a local model folder or a hub id such as "
                          "google/medgemma-4b-it")
    candidate = resolve_path(name_or_path)
    if candidate.exists() or not _HUB_ID.match(name_or_path):
        if not candidate.is_dir():
            raise ModelError(f"model path {candidate} does not exist (from model_name_or_path={name_or_path!r}); "
                             "relative paths start at the repository root. For the demo, build the tiny model "
                             "first with `wgsy tiny-model PATH` (or run `wgsy demo`)")
        if not (candidate / "config.json").is_file():
            raise ModelError(f"model folder {candidate} has no config.json; point model_name_or_path at the folder "
                             "that save_pretrained wrote")
        return ModelSource(name_or_path, candidate, _read_model_type(str(candidate), trust_remote_code))
    return ModelSource(name_or_path, None, _read_model_type(name_or_path, trust_remote_code))


def _read_model_type(name_or_path: str, trust_remote_code: bool) -> str:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelError(f"could not read the config of model {name_or_path!r}: {error}. Check the hub id, "
                         "download the model first if HF_HUB_OFFLINE is set, or pass a local folder") from None
    return config.model_type


def load_processor(name_or_path: str | Path, *, padding_side: str = "right", trust_remote_code: bool = False) -> Any:
    """Load the processor (tokenizer and image processor) and set the padding side on both.

    Training pads on the right; batched generation must pad on the left. Setting the side on the
    processor alone may not reach its tokenizer, so it is set on each.
    """
    from transformers import AutoProcessor

    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side {padding_side!r} is invalid; expected 'left' or 'right'")
    try:
        processor = AutoProcessor.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelError(f"could not load the processor from {name_or_path}: {error}") from None
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = padding_side
    if hasattr(processor, "padding_side"):
        processor.padding_side = padding_side
    if tokenizer.pad_token_id is None:
        raise ModelError(f"the tokenizer of {name_or_path} defines no padding token; batched training and "
                         "evaluation need one (Gemma 3 tokenizers define <pad>)")
    return processor


def load_base_model(source: ModelSource, *, device: str, dtype: torch.dtype, attn_implementation: str,
                    quantization: Any | None = None, trust_remote_code: bool = False,
                    offload_folder: str | None = None) -> Any:
    """Load the image-text-to-text model in `dtype` on `device`; the caller adds LoRA afterwards."""
    from transformers import AutoModelForImageTextToText

    where = str(source.local_dir or source.name)
    logger.info("loading %s (%s) in %s on %s, attention %s", where, source.model_type, dtype, device,
                attn_implementation)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn_implementation,
                              "trust_remote_code": trust_remote_code}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    # NOTE: offloading a 4-bit model also needs llm_int8_enable_fp32_cpu_offload in its quantization config.
    kwargs.update(offload_loading_kwargs(offload_folder, device))
    try:
        model = AutoModelForImageTextToText.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelError(f"could not load the model from {where}: {error}") from None
    if "device_map" not in kwargs:
        model = model.to(device)
    return model


def load_adapter(model: Any, adapter_dir: str | Path, *, is_trainable: bool = False) -> Any:
    """Attach the LoRA adapter in `adapter_dir` to `model` and check every weight was loaded.

    PEFT only warns when adapter keys do not match the model, and the result then behaves like the
    base model. Here any missing or unexpected key, or a weight that did not arrive, is a ModelError.
    """
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    weights_file = adapter_dir / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise ModelError(f"adapter folder {adapter_dir} has no {ADAPTER_WEIGHTS}; point it at the adapter/ "
                         "folder of a finished training run")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    except (ValueError, RuntimeError, KeyError) as error:
        raise ModelError(f"adapter {adapter_dir} does not fit this base model: {error}") from None

    saved = load_file(str(weights_file))
    loaded = get_peft_model_state_dict(peft_model)
    missing = sorted(set(loaded) - set(saved))
    unexpected = sorted(set(saved) - set(loaded))
    if missing or unexpected:
        raise ModelError(_key_mismatch_message(adapter_dir, missing, unexpected))
    for key, tensor in saved.items():
        if not torch.equal(loaded[key].detach().cpu().to(tensor.dtype), tensor):
            raise ModelError(f"adapter {adapter_dir}: weight {key} differs from the file after loading; the adapter "
                             "was not applied to this model")
    logger.info("loaded adapter %s (%d tensors, all keys matched)", adapter_dir, len(saved))
    return peft_model


def _key_mismatch_message(adapter_dir: Path, missing: list[str], unexpected: list[str]) -> str:
    lines = [f"adapter {adapter_dir} does not match the base model, so it would behave like the base model:"]
    if unexpected:
        lines.append(f"  {len(unexpected)} adapter weight(s) have no place in the model, e.g. {unexpected[:3]}")
    if missing:
        lines.append(f"  {len(missing)} LoRA weight(s) of the model are not in the adapter, e.g. {missing[:3]}")
    lines.append("Load the adapter onto the base model it was trained from (see base_model_name_or_path in its "
                 "adapter_config.json).")
    return "\n".join(lines)


def peak_memory_bytes(device: str) -> int:
    """Return the peak memory of this process: CUDA allocations on a GPU, resident set size on CPU."""
    if device == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def hardware_summary(device: str) -> dict[str, Any]:
    """Return a description of the hardware for the run card."""
    import os
    import platform

    summary: dict[str, Any] = {"device": device, "platform": platform.platform(), "cpu_count": os.cpu_count(),
                               "torch_threads": torch.get_num_threads()}
    if device == "cuda" and torch.cuda.is_available():
        index = torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        summary.update({"gpu": properties.name, "gpu_memory_bytes": properties.total_memory,
                        "gpu_count": torch.cuda.device_count(), "cuda": torch.version.cuda,
                        "bf16_supported": torch.cuda.is_bf16_supported()})
    return summary
