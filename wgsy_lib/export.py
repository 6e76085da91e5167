"""Merge a LoRA adapter into a full-precision copy of the base model, for serving.

`export_merged` loads the base model in bf16 or fp32 (never 4-bit), applies the adapter and records
the predictions of base + adapter on a few examples. It then merges with peft's `merge_and_unload`,
saves the merged model and its processor as safetensors in the Hugging Face layout, reloads what it
saved and compares its predictions with the recorded ones. The result goes to `export_card.json` beside
the model: the largest absolute logit difference, whether the argmax token at every position and
the greedy generations agree, and which adapter modules an unmerged-LoRA server would ignore.

Merging into 4-bit weights is refused: the merged update is rounded to the 4-bit grid, which
removes most of a LoRA update's effect and changes outputs. An adapter trained with 4-bit QLoRA is
merged into a freshly loaded bf16 or fp32 base instead, and the card says so.
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, ModelError
from .export_checks import CheckResult, PromptExample, compare_outputs, load_check_examples, record_outputs
from .log import log_written
from .paths import resolve_path

logger = logging.getLogger(__name__)

EXPORT_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
EXPORT_CARD_NAME = "export_card.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
# Files whose presence shows that a folder contains a saved processor (tokenizer and image processor).
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json", "tokenizer.json")
# Run-card keys that record 4-bit training, under any of the names a training stage might use.
QUANTIZATION_KEYS = ("quantization", "load_in_4bit", "use_4bit", "qlora", "bnb_4bit")
LANGUAGE_MODEL_MARKER = "language_model"
SERVER_NOTE = (
    "vLLM applies LoRA adapters to the language model only: for multimodal models it logs 'vLLM currently "
    "only supports adding LoRA to language model, <module> will be ignored' for LoRA weights elsewhere. "
    "This is the warning text users report for vLLM 0.8.4 and 0.14.0 (vllm-project/vllm issues 27916 and "
    "32541); it was not run here, and later versions may add vision-tower LoRA. The modules listed under "
    "'ignored_by_unmerged_server' change the model only through this merged export."
)


@dataclass
class ExportResult:
    """Output folder, card and equivalence-check results of one `export_merged` call."""

    out_dir: Path
    card_path: Path
    dtype: str
    checks: list[CheckResult]
    agree: bool  # every check: same argmax at every position and the same greedy generation
    max_abs_logit_diff: float
    ignored_by_unmerged_server: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def export_merged(
    base_model: str | Path | torch.nn.Module,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "bfloat16",
    check_examples: str | Path | list[PromptExample] | None = None,
    max_check_examples: int = 3,
    max_new_tokens: int = 16,
    device: str | torch.device | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Merge the adapter in `adapter_dir` into `base_model` and save the result to `out_dir`.

    `base_model` is a model folder, or an already loaded model (which is merged in place, and must
    not be quantised). `check_examples` is a training/evaluation JSONL file or a list of
    `PromptExample`; without it, a synthetic image and two fixed prompts are used. Differences are
    reported in the card and the log and do not raise, because bf16 merging rounds the update.
    """
    started = time.time()
    torch_dtype = _export_dtype(dtype)
    adapter_path = _check_adapter_dir(adapter_dir)
    out_path = _prepare_out_dir(out_dir, adapter_path, overwrite=overwrite)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    notes = _quantized_training_notes(adapter_path)

    model, base_label = _load_base(base_model, torch_dtype, device)
    processor = _load_processor(adapter_path, base_model)
    examples = load_check_examples(check_examples, limit=max_check_examples)

    peft_model = _apply_adapter(model, adapter_path)
    reference = record_outputs(peft_model, processor, examples, max_new_tokens=max_new_tokens, device=device)

    merged = peft_model.merge_and_unload(safe_merge=True)
    _save_merged(merged, processor, out_path)
    del merged, peft_model, model
    gc.collect()

    reloaded = _load_merged(out_path, torch_dtype, device)
    merged_outputs = record_outputs(reloaded, processor, examples, max_new_tokens=max_new_tokens, device=device)
    checks = compare_outputs(reference, merged_outputs, names=[example.name for example in examples])
    ignored = _modules_ignored_by_server(adapter_path)
    result = ExportResult(
        out_dir=out_path, card_path=out_path / EXPORT_CARD_NAME, dtype=str(torch_dtype).removeprefix("torch."),
        checks=checks, agree=all(check.agree for check in checks),
        max_abs_logit_diff=max((check.max_abs_logit_diff for check in checks), default=0.0),
        ignored_by_unmerged_server=ignored, notes=notes,
    )
    _log_check(result)
    _write_card(result, base_label=base_label, adapter_path=adapter_path, seconds=time.time() - started)
    return result


def _export_dtype(dtype: str) -> torch.dtype:
    key = str(dtype).removeprefix("torch.")
    if key in ("fp16", "float16"):
        raise ConfigError(
            f"dtype is {dtype!r}; export supports bf16 or fp32 only, because Gemma 3 overflows in fp16 "
            "(NaN or empty output). Use bf16 for GPUs that support it and fp32 otherwise."
        )
    if key not in EXPORT_DTYPES:
        raise ConfigError(f"dtype is {dtype!r}; expected bf16 (bfloat16) or fp32 (float32)")
    return EXPORT_DTYPES[key]


def _check_adapter_dir(adapter_dir: str | Path) -> Path:
    path = resolve_path(adapter_dir)
    for name in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME):
        if not (path / name).is_file():
            raise ModelError(
                f"adapter folder {path} has no {name}; pass the adapter/ folder of a finished 03_train run "
                "(it contains adapter_config.json and adapter_model.safetensors)"
            )
    return path


def _prepare_out_dir(out_dir: str | Path, adapter_path: Path, *, overwrite: bool) -> Path:
    path = resolve_path(out_dir)
    if path.resolve() == adapter_path.resolve():
        raise ConfigError(f"out_dir {path} is the adapter folder; choose a new folder for the merged model")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise ConfigError(f"out_dir {path} already exists and is not empty; choose a new folder or pass overwrite=True (--overwrite)")
        if not (path / EXPORT_CARD_NAME).is_file():
            raise ConfigError(f"out_dir {path} is not an earlier export (no {EXPORT_CARD_NAME}); refusing to delete it, choose a new folder")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def refuse_quantized(model: torch.nn.Module, *, source: str) -> None:
    """Raise ModelError if `model` contains quantised (4-bit or 8-bit) weights."""
    config = getattr(model, "config", None)
    quantized = (
        getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        or getattr(model, "hf_quantizer", None) is not None
        or getattr(config, "quantization_config", None) is not None
    )
    if quantized:
        raise ModelError(
            f"{source} is loaded with quantised weights; merging a LoRA adapter into 4-bit weights rounds "
            "the update to the 4-bit grid, which removes most of what the adapter learned and changes the "
            "outputs. Pass the base model's folder instead: export loads a fresh bf16 or fp32 copy to merge into."
        )


def _load_base(base_model: str | Path | torch.nn.Module, torch_dtype: torch.dtype, device: torch.device) -> tuple[torch.nn.Module, str]:
    if isinstance(base_model, torch.nn.Module):
        refuse_quantized(base_model, source="the base model passed in")
        logger.info("export: merging into the model passed in; its weights are changed in place")
        return base_model.to(device=device, dtype=torch_dtype), type(base_model).__name__

    from transformers import AutoModelForImageTextToText

    path = _check_base_dir(base_model)
    logger.info("export: loading the base model %s in %s on %s", path, torch_dtype, device)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype).to(device)
    return model, str(path)


def _check_base_dir(base_model: str | Path) -> Path:
    path = resolve_path(base_model)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelError(f"base model folder {path} has no config.json; pass the folder of the model the adapter was trained on")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "unknown")
        raise ModelError(
            f"base model {path} is stored quantised ({method}); merging into quantised weights rounds the LoRA "
            "update away and changes the outputs. Point the base at the unquantised checkpoint (bf16 or fp32), "
            "even if the adapter was trained with 4-bit QLoRA."
        )
    return path


def _quantized_training_notes(adapter_path: Path) -> list[str]:
    for card_path in (adapter_path / "run_card.json", adapter_path.parent / "run_card.json"):
        if not card_path.is_file():
            continue
        card = json.loads(card_path.read_text(encoding="utf-8"))
        if _mentions_4bit(card):
            note = (
                f"{card_path} records 4-bit QLoRA training. The adapter is merged into a freshly loaded "
                "unquantised base, so the merged model differs slightly from the model used in training "
                "(4-bit base + adapter); evaluate the merged model before serving it."
            )
            logger.info("export: %s", note)
            return [note]
    return []


def _mentions_4bit(value: Any) -> bool:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in QUANTIZATION_KEYS and item not in (None, False, "", "none", "None"):
                return True
            if _mentions_4bit(item):
                return True
    elif isinstance(value, list):
        return any(_mentions_4bit(item) for item in value)
    return False


def _load_processor(adapter_path: Path, base_model: str | Path | torch.nn.Module) -> Any:
    from transformers import AutoProcessor

    if any((adapter_path / name).is_file() for name in PROCESSOR_FILES):
        source = adapter_path
    elif isinstance(base_model, torch.nn.Module):
        raise ModelError(
            f"adapter folder {adapter_path} has no processor files ({', '.join(PROCESSOR_FILES)}) and the base "
            "was passed as a loaded model; pass the base model's folder so its processor can be saved with the export"
        )
    else:
        source = resolve_path(base_model)
    logger.info("export: processor from %s", source)
    return AutoProcessor.from_pretrained(source)


def _apply_adapter(model: torch.nn.Module, adapter_path: Path) -> torch.nn.Module:
    """Wrap `model` with the adapter, raising ModelError if any adapter weight found no place."""
    from peft import PeftConfig, PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    config = PeftConfig.from_pretrained(str(adapter_path))
    try:
        peft_model = PeftModel(model, config)
    except ValueError as error:
        raise ModelError(f"adapter {adapter_path} does not fit this base model: {error}") from None
    weights = load_peft_weights(str(adapter_path), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(peft_model, weights, adapter_name="default")

    missing = [key for key in result.missing_keys if "lora_" in key]
    if result.unexpected_keys or missing:
        raise ModelError(
            f"adapter {adapter_path} does not match the base model: {len(result.unexpected_keys)} adapter "
            f"weight(s) found no layer (first: {result.unexpected_keys[:3]}) and {len(missing)} LoRA layer(s) "
            f"got no weight (first: {missing[:3]}). Check that --base is the model the adapter was trained on."
        )
    return peft_model.eval()


def _save_merged(merged: torch.nn.Module, processor: Any, out_path: Path) -> None:
    # Gradient checkpointing sets use_cache=False during training; a saved False slows generation.
    merged.config.use_cache = True
    if getattr(merged.config, "text_config", None) is not None:
        merged.config.text_config.use_cache = True
    merged.save_pretrained(out_path)
    processor.save_pretrained(out_path)
    log_written(out_path, "merged model and processor (safetensors)", log=logger)


def _load_merged(out_path: Path, torch_dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(out_path, dtype=torch_dtype).to(device).eval()


def _modules_ignored_by_server(adapter_path: Path) -> list[str]:
    """List adapter module names outside the language model, which vLLM's unmerged LoRA ignores."""
    from safetensors import safe_open

    modules = set()
    with safe_open(str(adapter_path / ADAPTER_WEIGHTS_NAME), framework="pt") as handle:
        for key in handle.keys():
            # Keys without "lora_" belong to full module copies, which are listed from modules_to_save below.
            module, separator, _rest = key.partition(".lora_")
            if separator and LANGUAGE_MODEL_MARKER not in module:
                modules.add(module.removeprefix("base_model.model."))
    config = json.loads((adapter_path / ADAPTER_CONFIG_NAME).read_text(encoding="utf-8"))
    for name in config.get("modules_to_save") or []:
        modules.add(f"{name} (full copy in modules_to_save)")
    return sorted(modules)


def _log_check(result: ExportResult) -> None:
    if result.agree:
        logger.info("export check: merged and base + adapter agree on %d example(s); max |logit difference| %.3g",
                    len(result.checks), result.max_abs_logit_diff)
    else:
        differing = [check.example for check in result.checks if not check.agree]
        logger.warning(
            "export check: merged model differs from base + adapter on %d of %d example(s) (%s); max |logit "
            "difference| %.3g. In bf16 small differences come from rounding the merged weights; export in fp32 "
            "to tell rounding from a real mismatch.", len(differing), len(result.checks), ", ".join(differing),
            result.max_abs_logit_diff,
        )
    if result.ignored_by_unmerged_server:
        logger.info("export: %d adapter module(s) lie outside the language model and reach a server only through "
                    "this merged model, e.g. %s", len(result.ignored_by_unmerged_server), result.ignored_by_unmerged_server[0])


def _write_card(result: ExportResult, *, base_label: str, adapter_path: Path, seconds: float) -> None:
    import peft
    import transformers

    card = {
        "base_model": base_label,
        "adapter_dir": str(adapter_path),
        "adapter_config": json.loads((adapter_path / ADAPTER_CONFIG_NAME).read_text(encoding="utf-8")),
        "dtype": result.dtype,
        "format": "Hugging Face safetensors (AutoModelForImageTextToText + AutoProcessor)",
        "check": {
            "agree": result.agree,
            "max_abs_logit_diff": result.max_abs_logit_diff,
            "examples": [asdict(check) for check in result.checks],
        },
        "ignored_by_unmerged_server": result.ignored_by_unmerged_server,
        "server_note": SERVER_NOTE,
        "notes": result.notes,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "python": platform.python_version()},
        "seconds": round(seconds, 1),
    }
    result.card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    log_written(result.card_path, "export card", log=logger)


def export_selected(results: Any, *, out_dir: str | Path, dtype: str = "bf16") -> ExportResult | None:
    """Export the adapter that 04_evaluate selected on the validation file, or log why nothing is exported.

    `results` is what `evaluation.run_evaluation` returns; the choice is read from the
    `selection.json` that `evaluation.select_model` wrote. The validation file's first examples
    serve as check examples. An empty `out_dir` turns the step off.
    """
    if not out_dir:
        logger.info("export: export_dir is empty, so the selected model is not exported")
        return None
    plan = results.plan
    selection_path = Path(plan.output_dir) / "selection.json"
    if not selection_path.is_file():
        logger.info("export: no %s (no validation file), so no model was selected to export", selection_path)
        return None

    selected = json.loads(selection_path.read_text(encoding="utf-8")).get("selected")
    spec = next((model for model in plan.models if model.name == selected), None)
    if spec is None or spec.adapter is None:
        logger.info("export: the selected model is %s, which has no adapter to merge; nothing exported", selected)
        return None
    val_files = [item.path for item in plan.files if item.role == "val"]
    return export_merged(plan.config.base_model, spec.adapter, out_dir, dtype=dtype,
                         check_examples=val_files[0] if val_files else None)
