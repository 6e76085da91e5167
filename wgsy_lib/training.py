"""One LoRA fine-tuning run (one grid cell): the parameters of 03_train and the steps it calls.

The notebook calls, in order:

    plan = prepare_run(config)                      # inputs and hardware checked, nothing loaded yet
    model, processor = load_model_for_training(plan)
    trainer = build_trainer(plan, model, processor)
    train_result = run_training(plan, trainer)      # resumes from the last checkpoint if there is one
    metrics = evaluate_validation(plan, trainer.model, processor)
    summary = save_run(plan, trainer, processor, metrics, train_result)

and the learning test makes the same calls. The run directory layout is described in
`RunPlan`; a run counts as done when adapter/adapter_model.safetensors and metrics.json exist.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from .answers import scoring_classes
from .collate import AnswerOnlyCollator
from .config import StageConfig
from .errors import ConfigError, DataError, ModelError
from .jsonl import iter_json_lines
from .labels import LabelSet, load_labels
from .log import log_written
from .memory import check_memory_before_loading, lora_pattern
from .models import (ADAPTER_WEIGHTS, ModelSource, choose_attention, choose_device, choose_dtype,
                     hardware_summary, load_base_model, load_processor, locate_model, peak_memory_bytes,
                     quantization_config)
from .precision import NonFiniteLossGuard, fp16_override
from .runcard import build_run_card, finish_run_card, write_run_card
from .training_logs import CrashAfterStepCallback, LoggingCallback, tensorboard_callback, write_curves

logger = logging.getLogger(__name__)

# The linear layers of Gemma 3's language model (attention and MLP projections).
LANGUAGE_MODEL_LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The linear layers of Gemma 3's SigLIP vision tower, for `vision_target_modules`.
VISION_TOWER_LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
EMBEDDING_LAYERS = ("embed_tokens", "lm_head")
METRICS_FILE = "metrics.json"
SPLIT_FILES = {"train": "train.jsonl", "val": "val.jsonl"}
# How many missing photos are named in an error message before the rest are only counted.
_NAMED_MISSING = 5


class TrainConfig(StageConfig):
    """Parameters of 03_train: one LoRA fine-tuning run of a vision-language model."""

    stage: ClassVar[str] = "03_train"

    model_name_or_path: str = Field("", description="base model: a local folder (relative to the repository root) "
                                    "or a hub id such as google/medgemma-4b-it")
    trust_remote_code: bool = Field(False, description="allow code shipped with the model to run; off unless you "
                                    "trust the model's source")
    data_dir: str = Field("", description="folder with train.jsonl and val.jsonl written by 02_convert")
    labels_file: str = Field("params/labels.yaml", description="class list used to score validation answers")
    output_dir: str = Field("", description="run directory for this cell: adapter, run card, metrics, checkpoints")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto picks CUDA, then Apple GPU, then CPU")
    dtype: Literal["auto", "bf16", "fp32", "fp16"] = Field(
        "auto", description="weight dtype; auto is bf16 on GPUs that support it, else fp32; fp16 is rejected for Gemma 3")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="attention kernel; auto is eager for Gemma 3 training")
    torch_threads: int = Field(0, ge=0, description="CPU threads for torch; 0 keeps torch's default. 1 is fastest for "
                               "the tiny demo model, and on a busy machine")
    load_in_4bit: bool = Field(False, description="QLoRA: load the base model in 4-bit NF4 (CUDA and bitsandbytes only)")
    allow_fp16: bool = Field(False, description="allow dtype fp16, which overflows in Gemma 3; the run then stops at the "
                             "first NaN or infinite loss")
    offload_folder: str = Field("", description="folder for weights that do not fit on the GPU (offloaded to CPU RAM, "
                                "then this folder; slow); empty turns offloading off")
    seed: int = Field(42, description="seed for LoRA initialisation, data order and dropout")
    r: int = Field(16, description="LoRA rank (> 0)")
    lora_alpha: int = Field(16, description="LoRA scaling numerator; the update is scaled by lora_alpha / r")
    lora_dropout: float = Field(0.05, description="dropout on the LoRA input, in [0, 1)")
    target_modules: list[str] = Field(list(LANGUAGE_MODEL_LINEAR_LAYERS),
                                      description="linear layers of the language model that get LoRA")
    vision_target_modules: list[str] = Field([], description="linear layers of the vision tower that get LoRA, e.g. "
                                             "[q_proj, k_proj, v_proj, out_proj, fc1, fc2]; empty keeps it frozen")
    train_projector: bool = Field(False, description="train the multimodal projector fully and save it in the adapter")
    save_embedding_layers: bool = Field(False, description="save full copies of embed_tokens and lm_head in the "
                                        "adapter (GBs at MedGemma scale); only if you changed the vocabulary")
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate")
    num_train_epochs: float = Field(1.0, gt=0, description="passes over the training split (ignored if max_steps > 0)")
    max_steps: int = Field(-1, description="optimizer steps to train; -1 uses num_train_epochs")
    per_device_train_batch_size: int = Field(1, gt=0, description="examples per device per forward pass")
    gradient_accumulation_steps: int = Field(4, gt=0, description="forward passes per optimizer step")
    per_device_eval_batch_size: int = Field(1, gt=0, description="examples per device when computing validation loss")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="fraction of steps with linear learning-rate warm-up")
    lr_scheduler_type: str = Field("constant_with_warmup", description="transformers scheduler name, e.g. linear, cosine")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(0.3, gt=0, description="gradient clipping norm")
    gradient_checkpointing: bool = Field(True, description="recompute activations in the backward pass to save memory")
    logging_steps: int = Field(10, gt=0, description="log the training loss every this many steps")
    eval_steps: int = Field(0, ge=0, description="validation loss every this many steps; 0 means once per epoch")
    save_steps: int = Field(0, ge=0, description="checkpoint every this many steps; 0 means once per epoch")
    save_total_limit: int = Field(2, gt=0, description="checkpoints kept on disk (the newest ones)")
    resume: bool = Field(True, description="continue from the last checkpoint in output_dir/checkpoints if one exists")
    val_max_examples: int = Field(0, ge=0, description="score at most this many validation examples; 0 scores all")

    @field_validator("model_name_or_path", "data_dir", "output_dir")
    @classmethod
    def _required(cls, value: str, info: Any) -> str:
        if not value.strip():
            raise ValueError(f"{info.field_name} is required; set it in the parameters cell, the YAML file or with "
                             f"`papermill -p {info.field_name} ...`")
        return value

    @field_validator("r")
    @classmethod
    def _positive_rank(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("the LoRA rank must be a positive integer such as 8 or 16")
        return value

    @field_validator("lora_alpha")
    @classmethod
    def _positive_alpha(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("lora_alpha must be positive (commonly r or 2 * r)")
        return value

    @field_validator("lora_dropout")
    @classmethod
    def _dropout_range(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError("lora_dropout must be in [0, 1): 0 disables dropout, 1 would drop every input")
        return value

    @field_validator("target_modules")
    @classmethod
    def _some_targets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("target_modules is empty; LoRA needs at least one layer, e.g. [q_proj, v_proj]")
        return value

    @field_validator("max_steps")
    @classmethod
    def _max_steps(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("max_steps must be a positive number of steps, or -1 to train for num_train_epochs")
        return value


@dataclass
class RunPlan:
    """Everything one run decided before loading the model, and where it writes.

    Run directory layout: adapter/ (PEFT adapter, processor, base config with use_cache on),
    checkpoints/, tensorboard/, run_card.json, metrics.json, val_predictions.jsonl,
    loss_curve.csv, loss_curve.png, trainer_state.json and the executed notebook.
    """

    config: TrainConfig
    run_dir: Path
    data_files: dict[str, Path]
    rows: dict[str, list[dict[str, Any]]]
    labels: LabelSet
    answer_format: str
    classes: list[str]
    device: str
    dtype: torch.dtype
    attn_implementation: str
    model_source: ModelSource
    quantization: Any | None
    run_card: dict[str, Any]
    started: float = field(default_factory=time.monotonic)

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "adapter"

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / "tensorboard"


def prepare_run(config: TrainConfig) -> RunPlan:
    """Check the data, the model path and the hardware, and write the first run card; loads no weights."""
    run_dir = config.path("output_dir")
    data_files, rows = load_splits(config.path("data_dir"))
    labels = load_labels(config.labels_file)
    answer_format = _answer_format(rows["train"], data_files["train"])
    classes = scoring_classes(answer_format, labels)

    device = choose_device(config.device)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
        logger.info("torch threads: %d (torch_threads)", config.torch_threads)
    source = locate_model(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    dtype = (fp16_override(config.dtype, allow_fp16=config.allow_fp16, device=device)
             or choose_dtype(device, config.dtype, model_type=source.model_type))
    attention = choose_attention(config.attn_implementation, model_type=source.model_type, training=True)
    quantization = quantization_config(config.load_in_4bit, device=device, compute_dtype=dtype)
    check_memory_before_loading(
        source.local_dir or source.name, device=device, offload_folder=config.offload_folder or None,
        dtype=str(dtype).removeprefix("torch."), quantization="4bit" if config.load_in_4bit else None,
        lora_r=config.r, target_modules=lora_pattern(config.target_modules, config.vision_target_modules),
        batch_size=config.per_device_train_batch_size, gradient_checkpointing=config.gradient_checkpointing,
        attn_implementation=attention)

    run_dir.mkdir(parents=True, exist_ok=True)
    card = build_run_card(stage=TrainConfig.stage, parameters=config.to_dict(), data_files=data_files.values(),
                          hardware=hardware_summary(device),
                          extra={"decisions": {"device": device, "dtype": str(dtype).removeprefix("torch."),
                                               "attn_implementation": attention, "answer_format": answer_format,
                                               "classes": classes, "model_type": source.model_type},
                                 "examples": {split: len(split_rows) for split, split_rows in rows.items()}})
    write_run_card(card, run_dir)
    return RunPlan(config, run_dir, data_files, rows, labels, answer_format, classes, device, dtype, attention,
                   source, quantization, card)


def load_splits(data_dir: Path) -> tuple[dict[str, Path], dict[str, list[dict[str, Any]]]]:
    """Read train.jsonl and val.jsonl from `data_dir`, checking every row and every photo."""
    if not data_dir.is_dir():
        raise DataError(f"data_dir {data_dir} does not exist; run 02_convert first or fix data_dir")
    files = {split: data_dir / name for split, name in SPLIT_FILES.items()}
    rows = {split: read_jsonl_split(path, split) for split, path in files.items()}
    return files, rows


def read_jsonl_split(path: Path, split: str) -> list[dict[str, Any]]:
    """Read one split's JSONL (the 02_convert contract), rejecting empty splits and missing photos."""
    if not path.is_file():
        raise DataError(f"{split} split {path} not found; 02_convert writes train.jsonl and val.jsonl into data_dir")
    rows = []
    missing = []
    for line_number, row in iter_json_lines(path):
        _check_row(row, path, line_number)
        missing.extend((line_number, image) for image in row["images"] if not Path(image).is_file())
        rows.append(row)
    if not rows:
        raise DataError(f"{split} split {path} has no examples; check the split fractions and filters in 02_convert")
    if missing:
        named = "; ".join(f"line {number}: {image}" for number, image in missing[:_NAMED_MISSING])
        more = f" and {len(missing) - _NAMED_MISSING} more" if len(missing) > _NAMED_MISSING else ""
        raise DataError(f"{path}: {len(missing)} photo(s) not found ({named}{more}). The JSONL stores absolute "
                        "paths: rerun 02_convert on this machine, or restore the photos")
    logger.info("read %d %s examples from %s", len(rows), split, path)
    return rows


def _check_row(row: Any, path: Path, line_number: int) -> None:
    where = f"{path} line {line_number}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
        raise DataError(f"{where}: 'messages' must be a list of turns ending with the assistant's answer")
    images = row.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(image, str) for image in images):
        raise DataError(f"{where}: 'images' must be a non-empty list of image paths")
    if not row.get("label"):
        raise DataError(f"{where}: 'label' is missing; validation scoring needs the true class")


def _answer_format(rows: list[dict[str, Any]], path: Path) -> str:
    formats = sorted({row.get("answer_format", "json") for row in rows})
    if len(formats) != 1:
        raise DataError(f"{path} mixes answer formats {formats}; convert the cohort with one answer_format")
    return formats[0]


def load_model_for_training(plan: RunPlan) -> tuple[Any, Any]:
    """Load the base model and processor, and wrap the model with the LoRA adapter of the plan."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    config = plan.config
    processor = load_processor(plan.model_source.local_dir or plan.model_source.name, padding_side="right",
                               trust_remote_code=config.trust_remote_code)
    torch.manual_seed(config.seed)
    model = load_base_model(plan.model_source, device=plan.device, dtype=plan.dtype,
                            attn_implementation=plan.attn_implementation, quantization=plan.quantization,
                            trust_remote_code=config.trust_remote_code, offload_folder=config.offload_folder or None)
    lora = lora_config(config, model)
    if plan.quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA r=%d alpha=%d dropout=%.2f: %s trainable of %s parameters (%.3f%%)", config.r,
                config.lora_alpha, config.lora_dropout, f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    plan.run_card["trainable_parameters"] = trainable
    plan.run_card["total_parameters"] = total
    return model, processor


def lora_config(config: TrainConfig, model: Any) -> Any:
    """Return the PEFT LoraConfig for `config`, after checking every target module exists in `model`."""
    from peft import LoraConfig

    pattern = target_module_pattern(config, model)
    modules_to_save = ["multi_modal_projector"] if config.train_projector else None
    return LoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=pattern, modules_to_save=modules_to_save, bias="none",
                      task_type="CAUSAL_LM")


def target_module_pattern(config: TrainConfig, model: Any) -> str:
    """Return a regex that matches the requested linear layers inside the language model (and vision tower).

    A plain list of names would also match the vision tower's q_proj/k_proj/v_proj, so the match is
    scoped by the parent module. Unknown names raise ConfigError listing the names that exist.
    """
    scopes = [("language_model", "target_modules", config.target_modules)]
    if config.vision_target_modules:
        scopes.append(("vision_tower", "vision_target_modules", config.vision_target_modules))
    if config.train_projector and not _has_module(model, "multi_modal_projector"):
        raise ConfigError("train_projector is true but the model has no multi_modal_projector module")

    alternatives = []
    for scope, parameter, names in scopes:
        available = linear_layer_names(model, scope)
        if not available:
            raise ConfigError(f"{parameter}: the model has no linear layers under a module named {scope!r}; "
                              "this model is not laid out like Gemma 3")
        unknown = sorted(set(names) - available)
        if unknown:
            raise ConfigError(f"{parameter} = {names}: unknown module name(s) {unknown}. The linear layers under "
                              f"{scope} are: {sorted(available)}")
        alternatives.append(rf".*\b{scope}\..*\.(?:{'|'.join(sorted(set(names)))})")
    return "|".join(f"(?:{alternative})" for alternative in alternatives)


def linear_layer_names(model: Any, scope: str) -> set[str]:
    """Return the short names of the linear layers below modules named `scope`."""
    names = set()
    for name, module in model.named_modules():
        if f"{scope}." in name and _is_linear(module):
            names.add(name.rsplit(".", 1)[-1])
    return names


def _is_linear(module: Any) -> bool:
    # 4-bit layers from bitsandbytes subclass torch.nn.Linear.
    return isinstance(module, torch.nn.Linear)


def _has_module(model: Any, short_name: str) -> bool:
    return any(name.rsplit(".", 1)[-1] == short_name for name, _ in model.named_modules())


def build_trainer(plan: RunPlan, model: Any, processor: Any) -> Any:
    """Return a TRL SFTTrainer for the plan, with answer-only labels and the run's callbacks."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from .notebook import is_headless

    config = plan.config
    headless = is_headless()
    per_epoch = {"eval": config.eval_steps == 0, "save": config.save_steps == 0}
    args = SFTConfig(
        output_dir=str(plan.checkpoint_dir),
        seed=config.seed,
        data_seed=config.seed,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        bf16=plan.dtype == torch.bfloat16 and plan.device == "cuda",
        fp16=plan.dtype == torch.float16,
        use_cpu=plan.device == "cpu",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="epoch" if per_epoch["eval"] else "steps",
        eval_steps=None if per_epoch["eval"] else config.eval_steps,
        save_strategy="epoch" if per_epoch["save"] else "steps",
        save_steps=500 if per_epoch["save"] else config.save_steps,
        save_total_limit=config.save_total_limit,
        prediction_loss_only=True,
        # Images live in the "images" column; the Trainer would drop columns the model does not take.
        remove_unused_columns=False,
        # The collator tokenizes and processes images on the fly; nothing is truncated, so image
        # tokens always match image features.
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        report_to="none",
        disable_tqdm=headless,
        dataloader_num_workers=0,
    )
    train_dataset = Dataset.from_list(_trainer_rows(plan.rows["train"]))
    eval_dataset = Dataset.from_list(_trainer_rows(plan.rows["val"]))
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processor, data_collator=AnswerOnlyCollator(processor))
    _add_callbacks(trainer, plan, headless=headless)
    return trainer


def _trainer_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Only the conversation and the image paths; the collator loads the photos with load_image.
    return [{"messages": row["messages"], "images": row["images"]} for row in rows]


def _add_callbacks(trainer: Any, plan: RunPlan, *, headless: bool) -> None:
    from transformers import PrinterCallback

    trainer.add_callback(tensorboard_callback(plan.tensorboard_dir))
    if headless:
        # The default PrinterCallback prints a raw dict per log step into the executed notebook.
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(LoggingCallback())
    if plan.dtype == torch.float16:
        trainer.add_callback(NonFiniteLossGuard(precision="fp16"))
    crash = CrashAfterStepCallback.from_environment()
    if crash is not None:
        trainer.add_callback(crash)


def last_checkpoint(plan: RunPlan) -> Path | None:
    """Return the newest checkpoint folder of the run, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    if not plan.checkpoint_dir.is_dir():
        return None
    found = get_last_checkpoint(str(plan.checkpoint_dir))
    return Path(found) if found else None


def run_training(plan: RunPlan, trainer: Any) -> Any:
    """Train, resuming from the last checkpoint when `resume` is on; return the TrainOutput."""
    checkpoint = last_checkpoint(plan) if plan.config.resume else None
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
        plan.run_card["resumed_from"] = str(checkpoint)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    logger.info("training finished: %d steps, final training loss %.4f, %.0f s", result.global_step,
                result.training_loss, result.metrics.get("train_runtime", 0.0))
    return result


def evaluate_validation(plan: RunPlan, model: Any, processor: Any) -> dict[str, Any]:
    """Score every validation example by label likelihood and return accuracy and per-class counts."""
    from .inference import read_eval_file, score_labels

    examples = read_eval_file(plan.data_files["val"], plan.labels, max_examples=plan.config.val_max_examples)
    # The same batched scorer as 04_evaluate, so validation and evaluation numbers are comparable.
    # Dropout must be off while scoring; the trainer may go on training after this call.
    was_training = model.training
    model.eval()
    try:
        run = score_labels(model, processor, examples, plan.labels, batch_size=plan.config.per_device_eval_batch_size,
                           desc="scoring validation examples")
    finally:
        model.train(was_training)
        processor.tokenizer.padding_side = "right"  # score_labels pads on the left; training pads on the right
    scored = [{"image": item.example.image, "subject_id": item.example.subject_id, "label": item.example.label,
               "predicted": item.predicted, "correct": item.predicted == item.example.label,
               "log_likelihoods": dict(zip(item.classes, item.log_likelihoods)),
               "probabilities": dict(zip(item.classes, item.probabilities))} for item in run.results]
    if run.errors:
        logger.warning("%d validation photo(s) could not be scored and are left out of the metrics", len(run.errors))
    metrics = summarize_scores(scored, plan.classes)
    metrics["split"] = "val"
    _write_jsonl(plan.run_dir / "val_predictions.jsonl", scored, "validation predictions")
    logger.info("validation accuracy %.3f on %d examples (chance %.3f)", metrics["accuracy"], metrics["n"],
                metrics["chance_accuracy"])
    return metrics


def save_run(plan: RunPlan, trainer: Any, processor: Any, metrics: dict[str, Any], train_result: Any) -> dict[str, Any]:
    """Write the adapter, processor, metrics, curves and the final run card; return the run card."""
    save_adapter(plan, trainer.model, processor)
    write_curves(trainer.state.log_history, plan.run_dir)
    trainer.state.save_to_json(str(plan.run_dir / "trainer_state.json"))
    metrics_path = plan.run_dir / METRICS_FILE
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    log_written(metrics_path, "validation metrics")

    card = finish_run_card(plan.run_card, status="completed", wall_time_s=time.monotonic() - plan.started,
                           peak_memory_bytes=peak_memory_bytes(plan.device),
                           train={"global_step": train_result.global_step,
                                  "training_loss": train_result.training_loss, **train_result.metrics},
                           validation={"accuracy": metrics["accuracy"], "n": metrics["n"]},
                           adapter_bytes=(plan.adapter_dir / ADAPTER_WEIGHTS).stat().st_size)
    write_run_card(card, plan.run_dir)
    return card


def save_adapter(plan: RunPlan, model: Any, processor: Any) -> Path:
    """Save the LoRA adapter, the processor and the base config (with the cache on) into adapter/."""
    adapter_dir = plan.adapter_dir
    model.save_pretrained(str(adapter_dir), save_embedding_layers=plan.config.save_embedding_layers)
    processor.save_pretrained(str(adapter_dir))

    # Gradient checkpointing turned the KV cache off; a saved use_cache=False would make every
    # generation at evaluation time recompute the whole prefix at each token.
    base_config = model.get_base_model().config
    base_config.use_cache = True
    text_config = base_config.get_text_config()
    text_config.use_cache = True
    base_config.save_pretrained(str(adapter_dir))

    _check_embedding_layers(adapter_dir / ADAPTER_WEIGHTS, saved_on_purpose=plan.config.save_embedding_layers)
    log_written(adapter_dir, f"LoRA adapter and processor ({(adapter_dir / ADAPTER_WEIGHTS).stat().st_size:,} bytes)")
    return adapter_dir


def _check_embedding_layers(weights_file: Path, *, saved_on_purpose: bool) -> None:
    from safetensors import safe_open

    embedding_bytes = 0
    with safe_open(str(weights_file), framework="pt") as handle:
        for key in handle.keys():
            if any(f"{layer}." in key for layer in EMBEDDING_LAYERS) and "lora_" not in key:
                tensor = handle.get_tensor(key)
                embedding_bytes += tensor.numel() * tensor.element_size()
    if embedding_bytes and not saved_on_purpose:
        raise ModelError(f"{weights_file} contains full embedding/output-head weights ({embedding_bytes:,} bytes) "
                         "although save_embedding_layers is false; report this as a bug")
    if embedding_bytes:
        logger.warning("the adapter includes full embed_tokens/lm_head copies: %.1f MB of its %.1f MB "
                       "(save_embedding_layers: true). vLLM and other servers may reject such adapters",
                       embedding_bytes / 1e6, weights_file.stat().st_size / 1e6)


def _write_jsonl(path: Path, rows: list[dict[str, Any]], what: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    log_written(path, what)


def is_run_done(run_dir: str | Path) -> bool:
    """Return True when the run directory contains a saved adapter and validation metrics."""
    run_dir = Path(run_dir)
    return (run_dir / "adapter" / ADAPTER_WEIGHTS).is_file() and (run_dir / METRICS_FILE).is_file()



def summarize_scores(scored: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """Return accuracy, per-class counts (every class gets a row) and chance levels for scored rows."""
    per_class = {name: {"n": 0, "correct": 0, "predicted": 0} for name in classes}
    outside = 0
    for row in scored:
        if row["label"] in per_class:
            per_class[row["label"]]["n"] += 1
            per_class[row["label"]]["correct"] += int(row["correct"])
        else:
            outside += 1
        per_class[row["predicted"]]["predicted"] += 1
    for counts in per_class.values():
        counts["recall"] = counts["correct"] / counts["n"] if counts["n"] else None
    total = len(scored)
    majority = max((counts["n"] for counts in per_class.values()), default=0)
    return {"accuracy": sum(int(row["correct"]) for row in scored) / total if total else 0.0, "n": total,
            "classes": classes, "per_class": per_class, "labels_outside_classes": outside,
            "chance_accuracy": 1 / len(classes), "majority_accuracy": majority / total if total else 0.0}


def show_curves(plan: RunPlan) -> None:
    """Display the saved loss curve in the notebook, marked as a plot so HTML reports keep it."""
    from .plots import show_image_file

    show_image_file(plan.run_dir / "loss_curve.png")


def metrics_table(metrics: dict[str, Any]) -> Any:
    """Return the validation metrics as a DataFrame: one row per class and an overall row with chance level."""
    import pandas as pd

    rows = [{"class": name, "examples": counts["n"], "correct": counts["correct"], "recall": counts["recall"],
             "predicted as this class": counts["predicted"]} for name, counts in metrics["per_class"].items()]
    rows.append({"class": "all (accuracy)", "examples": metrics["n"],
                 "correct": round(metrics["accuracy"] * metrics["n"]), "recall": metrics["accuracy"],
                 "predicted as this class": None})
    rows.append({"class": f"chance ({len(metrics['classes'])} classes)", "examples": None, "correct": None,
                 "recall": metrics["chance_accuracy"], "predicted as this class": None})
    return pd.DataFrame(rows)
