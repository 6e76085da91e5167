"""Memory estimate before a model is loaded, and the offload option for GPUs too small for it.

`estimate_memory` reads only a model's config.json. It builds the model on PyTorch's meta device
(shapes without storage) to count parameters exactly and adds the LoRA adapter the same way. From
the counts it estimates the bytes for weights, adapter training state and activations at a given
batch size.
`check_fits` compares the total with the memory the device has and, when it does not fit, raises
ModelError listing what to change, with the estimate each change gives. Stages call
`check_memory_before_loading`, which does both and logs the table, so a run that cannot fit stops
before spending minutes loading weights.

Every byte count except the weights is an estimate; see `_activation_bytes` for the formula and
docs/export_and_memory.md for a MedGemma 4B table.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import ConfigError, ModelError
from .paths import resolve_path

logger = logging.getLogger(__name__)

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "bfloat16": "bfloat16",
                 "float16": "float16", "float32": "float32"}
# bitsandbytes NF4 with double quantisation, as QLoRA uses it: 4 bits per weight, plus one 8-bit
# absmax per block of 64 weights, plus one fp32 constant per 256 absmax values.
NF4_BITS_PER_WEIGHT = 4 + 8 / 64 + 32 / (64 * 256)
# LoRA weights are kept in fp32 by peft even on a bf16 base, so each trainable parameter costs its
# fp32 value, its fp32 gradient and AdamW's two fp32 moments.
LORA_TRAINING_BYTES_PER_PARAM = 4 + 4 + 8
LORA_INFERENCE_BYTES_PER_PARAM = 4
# The loss upcasts the logits to fp32 and keeps the fp32 log-softmax for the backward pass.
LOSS_FP32_COPIES = 2
DEFAULT_HEADROOM = 0.9
# A Hugging Face hub id: "owner/name" with no other slashes.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ParameterCounts:
    """Exact parameter counts of a model and of a LoRA adapter on it, from its config alone."""

    vision: int
    projector: int
    language: int  # language model including the embedding, and lm_head when it is not tied
    total: int
    quantizable: int  # weights of nn.Linear layers that bitsandbytes would store in 4 bit
    lora: int
    lora_vision: int
    lora_language: int


@dataclass(frozen=True)
class ModelDims:
    """The sizes the activation estimate needs, read from the config."""

    text_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    vision_layers: int
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    patches_per_image: int
    image_tokens: int


@dataclass(frozen=True)
class MemorySettings:
    """The run settings the estimate depends on."""

    dtype: str = "bfloat16"
    quantization: str | None = None  # None or "4bit"
    lora_r: int = 16
    target_modules: str | list[str] = "all-linear"
    batch_size: int = 1
    seq_len: int = 256  # text tokens per example (prompt and answer), without the image tokens
    image_tokens: int | None = None  # tokens per image; None reads mm_tokens_per_image from the config
    images_per_example: int = 1
    gradient_checkpointing: bool = True
    training: bool = True
    attn_implementation: str = "eager"
    max_new_tokens: int = 64  # evaluation only: generated tokens held in the KV cache


@dataclass(frozen=True)
class MemoryEstimate:
    """Parameter counts and estimated bytes for one run, plus the settings that produced them."""

    counts: ParameterCounts
    dims: ModelDims
    settings: MemorySettings
    weight_bytes: int
    lora_bytes: int
    activation_bytes: int
    device_bytes: int | None = None  # memory the device has free, if measured

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.lora_bytes + self.activation_bytes

    def with_settings(self, **changes: Any) -> "MemoryEstimate":
        """Return the estimate for the same model with some settings changed (no config reload)."""
        if "target_modules" in changes or (self.settings.lora_r == 0 and changes.get("lora_r")):
            raise ConfigError("with_settings cannot change which layers get LoRA; call estimate_memory again")
        settings = dataclasses.replace(self.settings, **changes)
        counts = self.counts
        if settings.lora_r != self.settings.lora_r:
            # A LoRA layer has r·(in + out) parameters, so the count scales exactly with the rank.
            scale = settings.lora_r / self.settings.lora_r
            counts = dataclasses.replace(
                counts, lora=round(counts.lora * scale), lora_vision=round(counts.lora_vision * scale),
                lora_language=round(counts.lora_language * scale),
            )
        return _estimate(counts, self.dims, settings, device_bytes=self.device_bytes)

    def to_dict(self) -> dict[str, Any]:
        """Return the estimate as plain values, for run cards."""
        values = dataclasses.asdict(self)
        values["total_bytes"] = self.total_bytes
        return values

    def format_table(self) -> str:
        """Return the estimate as a small aligned table in GiB."""
        settings = self.settings
        quant = "4-bit NF4" if settings.quantization == "4bit" else settings.dtype
        rows = [
            ("parameters", f"{self.counts.total / 1e9:.3f} B (vision {self.counts.vision / 1e9:.3f} B, "
                           f"projector {self.counts.projector / 1e6:.1f} M, language {self.counts.language / 1e9:.3f} B)"),
            ("weights", f"{self.weight_bytes / GIB:6.2f} GiB ({quant})"),
            ("LoRA", f"{self.lora_bytes / GIB:6.2f} GiB ({self.counts.lora / 1e6:.1f} M parameters, r={settings.lora_r}"
                     f"{', with gradients and AdamW states' if settings.training else ''})"),
            ("activations", f"{self.activation_bytes / GIB:6.2f} GiB (batch {settings.batch_size}, "
                            f"{_sequence_length(self.dims, settings)} tokens, {_activation_mode(settings)}; estimate)"),
            ("total", f"{self.total_bytes / GIB:6.2f} GiB (estimate)"),
        ]
        if self.device_bytes is not None:
            rows.append(("device free", f"{self.device_bytes / GIB:6.2f} GiB"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _activation_mode(settings: MemorySettings) -> str:
    if not settings.training:
        return f"evaluation with KV cache, {settings.attn_implementation} attention"
    checkpointing = "on" if settings.gradient_checkpointing else "off"
    return f"gradient checkpointing {checkpointing}, {settings.attn_implementation} attention"


def estimate_memory(
    config_or_path: Any,
    *,
    dtype: str = "bfloat16",
    quantization: str | None = None,
    lora_r: int = 16,
    target_modules: str | list[str] = "all-linear",
    batch_size: int = 1,
    seq_len: int = 256,
    image_tokens: int | None = None,
    images_per_example: int = 1,
    gradient_checkpointing: bool = True,
    training: bool = True,
    attn_implementation: str = "eager",
    max_new_tokens: int = 64,
    device: str | torch.device | None = None,
    strict_targets: bool = True,
) -> MemoryEstimate:
    """Estimate the memory a training (or evaluation) run needs, from the model's config alone.

    `config_or_path` is a transformers config, a dict of config.json values, a config.json file or
    a model folder. No weights are read. `lora_r=0` means no adapter. With `device`, the estimate
    also records how much memory that device has free. `strict_targets=False` turns a
    `target_modules` that matches no layer into a warning and an estimate without LoRA.
    """
    settings = MemorySettings(
        dtype=_normalise_dtype(dtype), quantization=_check_quantization(quantization), lora_r=lora_r,
        target_modules=target_modules, batch_size=batch_size, seq_len=seq_len, image_tokens=image_tokens,
        images_per_example=images_per_example, gradient_checkpointing=gradient_checkpointing,
        training=training, attn_implementation=attn_implementation, max_new_tokens=max_new_tokens,
    )
    _check_positive(batch_size=batch_size, seq_len=seq_len)
    config = load_config(config_or_path)
    try:
        counts = count_parameters(config, lora_r=lora_r, target_modules=target_modules)
    except ConfigError as error:
        if strict_targets:
            raise
        logger.warning("memory estimate: %s. Counting no LoRA parameters; the stage checks the target modules "
                       "itself when the model is loaded.", error)
        counts = count_parameters(config, lora_r=0, target_modules=target_modules)
    dims = read_dims(config, image_tokens=image_tokens)
    device_bytes = available_memory(device) if device is not None else None
    return _estimate(counts, dims, settings, device_bytes=device_bytes)


def load_config(config_or_path: Any) -> Any:
    """Return a transformers config from a config object, a dict, a config.json or a model folder."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(config_or_path, PretrainedConfig):
        return config_or_path
    if isinstance(config_or_path, Mapping):
        values = dict(config_or_path)
        model_type = values.pop("model_type", None)
        if not model_type:
            raise ConfigError("model config has no 'model_type'; pass the model's config.json as written by transformers")
        return AutoConfig.for_model(model_type, **values)

    path = resolve_path(config_or_path)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return load_config(json.loads(path.read_text(encoding="utf-8")))
    if _HUB_ID.match(str(config_or_path)):
        return _load_hub_config(str(config_or_path))
    raise ConfigError(f"model config {path} not found; pass a model folder containing config.json, or the config.json itself")


def _load_hub_config(hub_id: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(hub_id)
    except OSError as error:
        raise ConfigError(
            f"model config for {hub_id!r} not found locally or on the hub ({error}); with HF_HUB_OFFLINE=1 the "
            "model must be in the Hugging Face cache, or pass its local folder"
        ) from None


def lora_pattern(language_modules: list[str], vision_modules: list[str] | tuple[str, ...] = ()) -> str:
    """Return a regular expression for LoRA on named linear layers of the language model and vision tower.

    A plain list such as ["q_proj", "v_proj"] would also match the vision tower's layers of the same
    name, so each list is scoped by its parent module, as the training stage scopes it.
    """
    scopes = [("language_model", language_modules), ("vision_tower", vision_modules)]
    alternatives = [rf".*\b{scope}\..*\.(?:{'|'.join(sorted(set(names)))})" for scope, names in scopes if names]
    if not alternatives:
        raise ConfigError("target_modules is empty; LoRA needs at least one layer, e.g. [q_proj, v_proj]")
    return "|".join(f"(?:{alternative})" for alternative in alternatives)


def count_parameters(config: Any, *, lora_r: int = 16, target_modules: str | list[str] = "all-linear") -> ParameterCounts:
    """Count parameters exactly by building the model on the meta device, where tensors have no storage.

    The adapter is added with peft's own `get_peft_model`, so `target_modules` matches exactly as it
    will in training ("all-linear", a list of module names, or a regular expression). Results are
    cached per config and adapter settings, because building MedGemma 4B's skeleton takes seconds.
    """
    targets = target_modules if isinstance(target_modules, str) else tuple(target_modules)
    return _count_parameters_cached(config.to_json_string(use_diff=False), lora_r, targets)


@functools.lru_cache(maxsize=32)
def _count_parameters_cached(config_json: str, lora_r: int, target_modules: str | tuple[str, ...]) -> ParameterCounts:
    from transformers import AutoModelForImageTextToText

    config = load_config(json.loads(config_json))
    if not isinstance(target_modules, str):
        target_modules = list(target_modules)

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    model.tie_weights()

    vision = projector = language = quantizable = 0
    for name, parameter in model.named_parameters():
        group = _parameter_group(name)
        if group == "vision":
            vision += parameter.numel()
        elif group == "projector":
            projector += parameter.numel()
        else:
            language += parameter.numel()
    for name, module in model.named_modules():
        # bitsandbytes keeps the output layer in full precision (transformers skips it when quantising).
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            quantizable += module.weight.numel()

    lora_vision, lora_language = _count_lora(model, lora_r=lora_r, target_modules=target_modules)
    return ParameterCounts(
        vision=vision, projector=projector, language=language, total=vision + projector + language,
        quantizable=quantizable, lora=lora_vision + lora_language, lora_vision=lora_vision, lora_language=lora_language,
    )


def _count_lora(model: torch.nn.Module, *, lora_r: int, target_modules: str | list[str]) -> tuple[int, int]:
    if lora_r <= 0:
        return 0, 0
    from peft import LoraConfig, get_peft_model

    try:
        with torch.device("meta"):
            peft_model = get_peft_model(model, LoraConfig(r=lora_r, target_modules=target_modules))
    except ValueError as error:
        raise ConfigError(f"target_modules {target_modules!r} matches no layer of this model: {error}") from None
    vision = language = 0
    for name, parameter in peft_model.named_parameters():
        if not parameter.requires_grad:
            continue
        if _parameter_group(name) == "vision":
            vision += parameter.numel()
        else:
            language += parameter.numel()
    return vision, language


def _parameter_group(name: str) -> str:
    if "vision_tower" in name:
        return "vision"
    if "multi_modal_projector" in name:
        return "projector"
    return "language"


def read_dims(config: Any, *, image_tokens: int | None = None) -> ModelDims:
    """Read the sizes the activation estimate needs from a Gemma 3 style config."""
    text = getattr(config, "text_config", config)
    vision = getattr(config, "vision_config", None)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    patches = 0
    if vision is not None:
        patches = (vision.image_size // vision.patch_size) ** 2
    tokens = image_tokens if image_tokens is not None else getattr(config, "mm_tokens_per_image", 0) or 0
    return ModelDims(
        text_layers=text.num_hidden_layers, hidden=text.hidden_size, intermediate=text.intermediate_size,
        heads=text.num_attention_heads, kv_heads=getattr(text, "num_key_value_heads", text.num_attention_heads),
        head_dim=head_dim, vocab=text.vocab_size,
        vision_layers=getattr(vision, "num_hidden_layers", 0), vision_hidden=getattr(vision, "hidden_size", 0),
        vision_intermediate=getattr(vision, "intermediate_size", 0), vision_heads=getattr(vision, "num_attention_heads", 1),
        patches_per_image=patches, image_tokens=tokens,
    )


def _estimate(counts: ParameterCounts, dims: ModelDims, settings: MemorySettings, *, device_bytes: int | None) -> MemoryEstimate:
    return MemoryEstimate(
        counts=counts, dims=dims, settings=settings,
        weight_bytes=_weight_bytes(counts, settings),
        lora_bytes=counts.lora * (LORA_TRAINING_BYTES_PER_PARAM if settings.training else LORA_INFERENCE_BYTES_PER_PARAM),
        activation_bytes=_activation_bytes(counts, dims, settings),
        device_bytes=device_bytes,
    )


def _weight_bytes(counts: ParameterCounts, settings: MemorySettings) -> int:
    dtype_bytes = DTYPE_BYTES[settings.dtype]
    if settings.quantization == "4bit":
        rest = counts.total - counts.quantizable
        return int(counts.quantizable * NF4_BITS_PER_WEIGHT / 8 + rest * dtype_bytes)
    return counts.total * dtype_bytes


def _sequence_length(dims: ModelDims, settings: MemorySettings) -> int:
    tokens = dims.image_tokens if settings.image_tokens is None else settings.image_tokens
    length = settings.seq_len + tokens * settings.images_per_example
    return length if settings.training else length + settings.max_new_tokens


def _activation_bytes(counts: ParameterCounts, dims: ModelDims, settings: MemorySettings) -> int:
    """Estimate activation memory: the tensors autograd keeps for the backward pass, plus logits.

    Per decoder layer and token, training keeps about
        6h (residual stream and the four RMSNorms of a Gemma 3 layer)
      + 3·q + 3·kv (query, key, value projections, their normed and rotated copies, attention output)
      + 4·i (gate and up projections, the activation and their product)
    values in the compute dtype, where h is the hidden size, q = heads·head_dim, kv = kv_heads·head_dim,
    i the MLP size and S the sequence length. Eager attention, which training Gemma 3 uses, adds
    heads·S attention probabilities per token twice: the fp32 softmax output and its compute-dtype
    copy (transformers 5.25 `eager_attention_forward`); SDPA and flash attention keep none. The
    SigLIP vision layers are counted the same way with 8·h + 2·i values. Gradient checkpointing keeps only
    each layer's input (h values per token) plus one layer's full set while it is recomputed. The
    logits add batch·S·vocab values in the compute dtype and in fp32 twice (the loss's upcast and
    log-softmax). The vision tower keeps activations only when LoRA trains some of its layers.
    Otherwise it runs without autograd history, so only one layer's working set counts.

    Evaluation counts the KV cache (2·kv values per token and layer) for the prompt plus
    `max_new_tokens`, one layer's working set, and the logits in the compute dtype.

    The formula leaves out the LoRA branches' own inputs, allocator fragmentation and the CUDA
    context; `check_fits` keeps a headroom for them.
    """
    value_bytes = 2 if settings.dtype in ("bfloat16", "float16") else 4
    eager = settings.attn_implementation == "eager"
    batch = settings.batch_size
    length = _sequence_length(dims, settings)

    q_width = dims.heads * dims.head_dim
    kv_width = dims.kv_heads * dims.head_dim
    probability_bytes = (4 + value_bytes) if eager else 0  # fp32 softmax output + compute-dtype copy
    text_layer = batch * length * (
        (6 * dims.hidden + 3 * q_width + 3 * kv_width + 4 * dims.intermediate) * value_bytes
        + dims.heads * length * probability_bytes
    )
    images = batch * settings.images_per_example
    patches = dims.patches_per_image
    vision_layer = images * patches * (
        (8 * dims.vision_hidden + 2 * dims.vision_intermediate) * value_bytes
        + dims.vision_heads * patches * probability_bytes
    )
    working_set = max(text_layer, vision_layer)

    if not settings.training:
        kv_cache = 2 * dims.text_layers * batch * length * kv_width * value_bytes
        logits = batch * length * dims.vocab * value_bytes
        return int(kv_cache + working_set + logits)

    if settings.gradient_checkpointing:
        text = dims.text_layers * batch * length * dims.hidden * value_bytes + text_layer
        vision = dims.vision_layers * images * patches * dims.vision_hidden * value_bytes + vision_layer
    else:
        text = dims.text_layers * text_layer
        vision = dims.vision_layers * vision_layer
    if counts.lora_vision == 0:
        vision = vision_layer
    logits_values = batch * length * dims.vocab
    return int(text + vision + logits_values * (value_bytes + 4 * LOSS_FP32_COPIES))


def available_memory(device: str | torch.device | None = None) -> int:
    """Return the bytes free on `device`: free GPU memory on CUDA, available RAM on the CPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(
    estimate: MemoryEstimate,
    device_memory: int | None = None,
    *,
    headroom: float = DEFAULT_HEADROOM,
    offload_folder: str | Path | None = None,
) -> None:
    """Raise ModelError if the estimate exceeds `headroom` times the device's free memory.

    With `offload_folder`, weights beyond the device's memory may go to CPU RAM or disk, so only the
    LoRA state and activations must fit. The message lists each change that would make the run fit,
    with the total it gives.
    """
    device_memory = device_memory if device_memory is not None else estimate.device_bytes
    if device_memory is None:
        raise ConfigError("check_fits needs device_memory, or an estimate made with device=...")
    budget = int(device_memory * headroom)
    needed = _bytes_on_device(estimate, offloading=offload_folder is not None)
    if needed <= budget:
        if offload_folder is not None and estimate.total_bytes > budget:
            logger.info("memory: about %.2f GiB of weights will be offloaded to CPU or %s (estimate)",
                        (estimate.total_bytes - budget) / GIB, offload_folder)
        return

    raise ModelError(
        f"this run needs about {needed / GIB:.2f} GiB but the device has {device_memory / GIB:.2f} GiB free "
        f"({headroom:.0%} usable = {budget / GIB:.2f} GiB). Estimate:\n{estimate.format_table()}\n"
        f"Change one of these and rerun:\n{_suggestions(estimate, budget, offloading=offload_folder is not None)}"
    )


def _bytes_on_device(estimate: MemoryEstimate, *, offloading: bool) -> int:
    return estimate.total_bytes - estimate.weight_bytes if offloading else estimate.total_bytes


def _suggestions(estimate: MemoryEstimate, budget: int, *, offloading: bool) -> str:
    settings = estimate.settings
    options: list[tuple[str, MemoryEstimate]] = []
    if settings.batch_size > 1:
        options.append(("batch_size 1 (raise gradient_accumulation_steps to keep the effective batch)",
                        estimate.with_settings(batch_size=1)))
    if settings.training and not settings.gradient_checkpointing:
        options.append(("gradient_checkpointing True", estimate.with_settings(gradient_checkpointing=True)))
    if settings.quantization is None:
        options.append(("quantization '4bit' (QLoRA, CUDA only)", estimate.with_settings(quantization="4bit")))
    if settings.lora_r > 8:
        options.append(("lora_r 8", estimate.with_settings(lora_r=8)))

    lines = []
    for text, option in options:
        needed = _bytes_on_device(option, offloading=offloading)
        verdict = "fits" if needed <= budget else "still too large"
        lines.append(f"  - {text}: about {needed / GIB:.2f} GiB ({verdict})")
    if not offloading:
        rest = estimate.total_bytes - estimate.weight_bytes
        verdict = "fits" if rest <= budget else "still too large"
        lines.append(f"  - offload_folder set to a local folder (weights spill to CPU RAM, then disk; slow): about "
                     f"{rest / GIB:.2f} GiB on the device ({verdict})")
    lines.append("  - a GPU with more memory")
    return "\n".join(lines)


def check_memory_before_loading(
    model_path: str | Path,
    *,
    device: str | torch.device,
    offload_folder: str | Path | None = None,
    headroom: float = DEFAULT_HEADROOM,
    **settings: Any,
) -> MemoryEstimate:
    """Estimate the run's memory from the model's config.json, log the table, and stop if it cannot fit.

    `settings` are `estimate_memory`'s keyword arguments (dtype, quantization, lora_r, batch_size, ...).
    Call it before `from_pretrained`, so a run that cannot fit fails in seconds, not after loading.
    Unknown target modules only warn here, because the stage reports them with the layer names that exist.
    """
    settings.setdefault("strict_targets", False)
    estimate = estimate_memory(model_path, device=device, **settings)
    logger.info("memory estimate before loading %s:\n%s", model_path, estimate.format_table())
    check_fits(estimate, headroom=headroom, offload_folder=offload_folder)
    return estimate


def offload_loading_kwargs(offload_folder: str | Path | None, device: str | torch.device) -> dict[str, Any]:
    """Return the `from_pretrained` arguments that offload weights which do not fit on the GPU.

    With a folder on a CUDA machine, `device_map="auto"` fills the GPU first, then CPU RAM, then the
    folder on disk. On a CPU-only machine there is nothing to offload to, so it returns no arguments
    and logs that the folder goes unused.
    """
    if not offload_folder:
        return {}
    folder = resolve_path(offload_folder)
    if torch.device(device).type != "cuda":
        logger.info("offload_folder %s is set, but the model runs on %s, so there is nothing to offload; "
                    "the folder is not used", folder, device)
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("offload: device_map='auto' puts what does not fit on the GPU in CPU RAM, then in %s", folder)
    return {"device_map": "auto", "offload_folder": str(folder)}


def _normalise_dtype(dtype: str) -> str:
    key = str(dtype).removeprefix("torch.")
    if key not in DTYPE_ALIASES:
        raise ConfigError(f"dtype is {dtype!r}; expected one of bf16, fp16, fp32 (or bfloat16, float16, float32)")
    return DTYPE_ALIASES[key]


def _check_quantization(quantization: str | None) -> str | None:
    if quantization in (None, "", "none"):
        return None
    if quantization != "4bit":
        raise ConfigError(f"quantization is {quantization!r}; expected None or '4bit'")
    return quantization


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} is {value!r}; expected a whole number of at least 1")
