"""The tiny model: a randomly initialised Gemma 3 vision-language model that stands in for MedGemma.

Tests and the demo cannot download MedGemma, so the project builds its own checkpoint of the same
architecture (`Gemma3ForConditionalGeneration`), with a tokenizer that carries MedGemma's special
tokens, MedGemma's chat template and a Gemma 3 processor. It is saved in the Hugging Face format and
loads through `AutoModelForImageTextToText` and `AutoProcessor` exactly as a MedGemma checkpoint
does, so swapping its path for a real checkpoint is the only change a real run needs.

It knows nothing: its weights are random. It exists to run every stage end to end, and (with the
phantom cohort's `exaggerated` preset) to show that the image path can learn; see docs/assets.md.

Two geometries:

- `tiny` (default): 64-pixel images, 16 image tokens; about 1 MB, built in a few seconds.
- `medgemma`: the processor and vision tower see MedGemma's real 896-pixel images and 256 image
  tokens (hidden sizes stay small), so shape and memory paths can be checked on a CPU.

`tiny_model_path()` builds once per set of settings into the cache folder and reuses it after.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError, ModelError
from .log import log_written
from .paths import cache_dir

logger = logging.getLogger(__name__)

# Bump when the builder changes what it writes, so cached copies are rebuilt.
BUILDER_VERSION = 2

GEOMETRIES = ("tiny", "medgemma")

# MedGemma's special tokens (the names Gemma 3 uses). Ids differ from MedGemma's (its vocabulary has
# 262k entries); code must look ids up through the tokenizer, never hard-code them.
PAD, EOS, BOS, UNK, MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"
START_OF_IMAGE, END_OF_IMAGE, IMAGE_SOFT_TOKEN = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK, MASK, START_OF_TURN, END_OF_TURN, START_OF_IMAGE, END_OF_IMAGE, IMAGE_SOFT_TOKEN)
# Byte-level fallback: any character outside the learnt vocabulary becomes its UTF-8 bytes.
BYTE_TOKENS = tuple(f"<0x{value:02X}>" for value in range(256))

# Text the BPE merges are learnt from, so that prompts, class names and JSON answers take few tokens.
# The class names and feature values of params/ are added at build time.
_CORPUS_TEXT = """\
You are a clinical geneticist. Look at the facial photograph and name the genetic syndrome.
Describe the dysmorphic facial features you see, then answer with the diagnosis.
Answer with JSON only: {"diagnosis": "...", "features": {...}, "explanation": "..."}
Which syndrome does this face show? The photo shows a child. The photo shows an adult.
The features are typical. The face looks symmetric. uncertain not_visible present typical yes no
{"ws": "yes"} {"ws": "no"} diagnosis features explanation syndrome control healthy
"""


@dataclass(frozen=True)
class TinyModelSettings:
    """Everything that decides the tiny model's files; its hash names the cache folder."""

    geometry: str = "tiny"
    seed: int = 0
    # Image path. 64 pixels in 8-pixel patches give an 8 x 8 grid, pooled 2 x 2 to 16 image tokens.
    image_size: int = 64
    patch_size: int = 8
    image_tokens: int = 16
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    # Language model.
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    head_dim: int = 32
    vocab_size: int = 1024
    # Gemma 3's own initialisation (std 0.02, projector at zero) makes a random model ignore images
    # and keeps its logits below about 0.5. The projector starts random here so images change the
    # output from the first step (benchmarks/phantom_learnability.py measures these settings).
    initializer_range: float = 0.05
    projector_std: float = 0.1
    # The output head is tied to the embedding, and LoRA leaves both frozen, so the embedding's scale
    # caps how confident the model can become. At std 0.1 (64 dimensions, 1024 tokens) no token gets
    # more than about a third of the probability, and LoRA training stalls near a loss of 1 per token.
    embedding_std: float = 0.3

    def key(self) -> str:
        # The tokenizer's merges are learnt from params/ text, so an edit there also makes a new model,
        # and so does any change to this builder's code.
        source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
        payload = json.dumps({**asdict(self), "builder": BUILDER_VERSION, "corpus": _corpus_lines(), "source": source},
                             sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def settings_for(geometry: str = "tiny", **overrides) -> TinyModelSettings:
    """Return the settings of a geometry, with any field overridden by name."""
    if geometry not in GEOMETRIES:
        raise ConfigError(f"tiny model geometry {geometry!r} is invalid; expected one of {', '.join(GEOMETRIES)}")
    base = {"geometry": geometry}
    if geometry == "medgemma":
        # MedGemma's processor geometry: 896-pixel images in 14-pixel patches (64 x 64), pooled 4 x 4
        # to 256 image tokens. Hidden sizes stay tiny so it still builds and runs on a CPU.
        base.update(image_size=896, patch_size=14, image_tokens=256)
    known = set(TinyModelSettings.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown tiny model setting(s) {unknown}; known settings are {sorted(known)}")
    settings = TinyModelSettings(**{**base, **overrides})
    _check_settings(settings)
    return settings


def tiny_model_path(*, root: str | Path | None = None, **settings) -> Path:
    """Return the folder of the tiny model with these settings, building it first if not cached."""
    resolved = settings_for(**settings)
    folder = Path(root) if root is not None else cache_dir() / "tiny-model"
    target = folder / f"{resolved.geometry}-{resolved.key()}"
    if (target / "config.json").is_file():
        return target
    return build_tiny_model(target, settings=resolved)


def build_tiny_model(path: str | Path, *, settings: TinyModelSettings | None = None, overwrite: bool = False,
                     **overrides) -> Path:
    """Build the tiny model into `path` (written atomically: a temp folder renamed into place)."""
    settings = settings or settings_for(**overrides)
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise ModelError(f"tiny model folder {path} already exists and is not empty; "
                             "choose a new folder or pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _write_model(staging, settings)
        staging.chmod(0o755)  # mkdtemp makes it private; the model is shared like any other output
        try:
            os.replace(staging, path)
        except OSError:
            # Another process finished the same build first; its copy is identical.
            if not (path / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log_written(path, f"tiny Gemma 3 model ({settings.geometry} geometry, seed {settings.seed})")
    return path


def load_tiny_model(path: str | Path):
    """Load a model folder through the Auto classes, as a MedGemma checkpoint is loaded."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path, dtype="float32")
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def _check_settings(settings: TinyModelSettings) -> None:
    grid = settings.image_size // settings.patch_size
    side = round(settings.image_tokens ** 0.5)
    if settings.image_size % settings.patch_size or side * side != settings.image_tokens or grid % side:
        raise ConfigError(
            f"tiny model: image_size {settings.image_size} / patch_size {settings.patch_size} gives a {grid} x {grid} "
            f"patch grid, which image_tokens {settings.image_tokens} must pool evenly (a square number whose side "
            "divides the grid); for example 64 / 8 with 16 tokens"
        )
    if settings.text_hidden % settings.text_heads or settings.vision_hidden % settings.vision_heads:
        raise ConfigError("tiny model: hidden sizes must be multiples of their head counts")


def _write_model(folder: Path, settings: TinyModelSettings) -> None:
    import torch

    tokenizer = build_tokenizer(settings.vocab_size)
    config = _model_config(settings, tokenizer)
    torch.manual_seed(settings.seed)
    from transformers import Gemma3ForConditionalGeneration

    model = Gemma3ForConditionalGeneration(config)
    _initialise(model, settings)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.eos_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(folder)
    _processor(settings, tokenizer).save_pretrained(folder)
    (folder / "README.md").write_text(_model_card(settings), encoding="utf-8")


def _initialise(model, settings: TinyModelSettings) -> None:
    import torch

    # Gemma 3 starts its projector at zero, which makes every image look the same to the language
    # model; a random projector lets image differences reach the logits from the first step.
    generator = torch.Generator().manual_seed(settings.seed + 1)
    projector = model.model.multi_modal_projector.mm_input_projection_weight
    embedding = model.get_input_embeddings().weight
    with torch.no_grad():
        projector.copy_(torch.randn(projector.shape, generator=generator) * settings.projector_std)
        embedding.copy_(torch.randn(embedding.shape, generator=generator) * settings.embedding_std)


def _model_config(settings: TinyModelSettings, tokenizer):
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text_config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=settings.text_hidden, intermediate_size=settings.text_hidden * 2,
        num_hidden_layers=settings.text_layers, num_attention_heads=settings.text_heads, num_key_value_heads=1,
        head_dim=settings.head_dim, query_pre_attn_scalar=settings.head_dim, max_position_embeddings=2048,
        sliding_window=512, initializer_range=settings.initializer_range,
        pad_token_id=ids[PAD], eos_token_id=ids[EOS], bos_token_id=ids[BOS],
    )
    vision_config = SiglipVisionConfig(
        hidden_size=settings.vision_hidden, intermediate_size=settings.vision_hidden * 2,
        num_hidden_layers=settings.vision_layers, num_attention_heads=settings.vision_heads,
        image_size=settings.image_size, patch_size=settings.patch_size, vision_use_head=False,
    )
    return Gemma3Config(
        text_config=text_config, vision_config=vision_config, mm_tokens_per_image=settings.image_tokens,
        boi_token_index=ids[START_OF_IMAGE], eoi_token_index=ids[END_OF_IMAGE], image_token_index=ids[IMAGE_SOFT_TOKEN],
        initializer_range=settings.initializer_range, pad_token_id=ids[PAD], eos_token_id=ids[EOS], bos_token_id=ids[BOS],
    )


def build_tokenizer(vocab_size: int = 1024):
    """Return a Gemma tokenizer with MedGemma's special tokens, byte fallback and chat template."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    # Learn BPE merges the way Gemma tokenizes: spaces become "▁" and stay attached to the next word.
    learner = Tokenizer(models.BPE(unk_token=UNK))
    learner.normalizer = normalizers.Replace(" ", "▁")
    learner.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    room = vocab_size - len(SPECIAL_TOKENS) - len(BYTE_TOKENS)
    if room < 128:
        raise ConfigError(f"tiny model: vocab_size {vocab_size} leaves no room for learnt tokens; use at least 400")
    trainer = trainers.BpeTrainer(vocab_size=room, show_progress=False, special_tokens=[],
                                  initial_alphabet=[chr(code) for code in range(32, 127)] + ["▁"])
    learner.train_from_iterator(_corpus_lines(), trainer=trainer)
    learnt = json.loads(learner.to_str())["model"]

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + BYTE_TOKENS)}
    for token, _ in sorted(learnt["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in learnt["merges"]]
    tokenizer = GemmaTokenizer(
        vocab=vocab, merges=merges, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, mask_token=MASK,
        extra_special_tokens={"boi_token": START_OF_IMAGE, "eoi_token": END_OF_IMAGE, "image_token": IMAGE_SOFT_TOKEN,
                              "sot_token": START_OF_TURN, "eot_token": END_OF_TURN},
        chat_template=gemma3_chat_template(), padding_side="left", add_bos_token=True, add_eos_token=False,
    )
    return tokenizer


def gemma3_chat_template() -> str:
    """Return Gemma 3's chat template, the one MedGemma ships, as installed with TRL.

    TRL recognises this exact text and swaps in its training variant for assistant-only loss, so the
    tiny model goes through the same path as a real MedGemma checkpoint.
    """
    # Read the file instead of importing trl, which takes seconds.
    spec = importlib.util.find_spec("trl")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        template = Path(location) / "chat_templates" / "gemma3.jinja"
        if template.is_file():
            return template.read_text(encoding="utf-8")
    raise ModelError(f"the installed TRL ({locations or 'not found'}) has no chat_templates/gemma3.jinja; "
                     "install trl>=1.16 (bash scripts/setup.sh)")


def _corpus_lines() -> list[str]:
    from .features import load_features
    from .labels import load_labels

    lines = _CORPUS_TEXT.splitlines()
    labels = load_labels()
    lines += [f"{name} " * 4 for name in labels.names]
    for feature in load_features():
        lines.append(f"{feature.name}: {feature.description} " + " ".join(feature.values))
    return lines


def _processor(settings: TinyModelSettings, tokenizer):
    from transformers import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    image_processor = Gemma3ImageProcessorPil(
        size={"height": settings.image_size, "width": settings.image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_pan_and_scan=False,
    )
    return Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                           chat_template=gemma3_chat_template(), image_seq_length=settings.image_tokens)


def _model_card(settings: TinyModelSettings) -> str:
    rows = "\n".join(f"| {name} | {value} |" for name, value in asdict(settings).items())
    return (
        "# WGSY tiny model (synthetic, untrained)\n\n"
        "A randomly initialised Gemma 3 vision-language model built by `wgsy tiny-model` for tests and the demo.\n"
        "It has MedGemma's architecture, special tokens and chat template, but no knowledge: its outputs mean\n"
        "nothing about real patients. Replace its path with a MedGemma checkpoint for real runs.\n\n"
        f"| setting | value |\n| --- | --- |\n{rows}\n| builder version | {BUILDER_VERSION} |\n"
    )
