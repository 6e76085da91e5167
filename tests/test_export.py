"""Merged export on the tiny model: round trip, equivalence check, refusals, the export card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wgsy_lib.errors import ConfigError, ModelError
from wgsy_lib.export import EXPORT_CARD_NAME, export_merged, refuse_quantized

LANGUAGE_ONLY = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def make_adapter(base_dir: Path, out_dir: Path, *, target_modules="all-linear", with_processor=True) -> Path:
    """Save a LoRA adapter whose B matrices are random, so merging really changes the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out_dir)
    if with_processor:
        AutoProcessor.from_pretrained(base_dir).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("run") / "adapter")


@pytest.fixture(scope="module")
def fp32_export(tiny_model_dir, adapter_dir, tmp_path_factory):
    return export_merged(tiny_model_dir, adapter_dir, tmp_path_factory.mktemp("export") / "merged", dtype="fp32")


def test_fp32_merge_matches_adapter(fp32_export):
    assert fp32_export.agree
    assert fp32_export.max_abs_logit_diff < 1e-4
    assert all(check.generation_agree for check in fp32_export.checks)


def test_merged_model_reloads_and_differs_from_base(fp32_export, tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    merged = AutoModelForImageTextToText.from_pretrained(fp32_export.out_dir)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    AutoProcessor.from_pretrained(fp32_export.out_dir)
    changed = [name for name, weight in base.state_dict().items()
               if not torch.equal(weight, merged.state_dict()[name])]
    assert any("q_proj" in name for name in changed)
    assert not any("lora_" in name for name in merged.state_dict())


def test_export_writes_safetensors_and_card(fp32_export):
    files = {path.name for path in fp32_export.out_dir.iterdir()}
    assert any(name.endswith(".safetensors") for name in files)
    assert not any(name.endswith(".bin") for name in files)
    card = json.loads((fp32_export.out_dir / EXPORT_CARD_NAME).read_text())
    assert card["dtype"] == "float32"
    assert card["check"]["agree"] is True
    assert "language model only" in card["server_note"]


def test_saved_config_keeps_cache_on(fp32_export):
    config = json.loads((fp32_export.out_dir / "config.json").read_text())
    assert config["text_config"].get("use_cache", True) is True


def test_vision_lora_listed_as_server_ignored(fp32_export):
    ignored = fp32_export.ignored_by_unmerged_server
    assert ignored
    assert all("language_model" not in name for name in ignored)
    assert any("vision_tower" in name for name in ignored)


def test_language_only_adapter_lists_nothing(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", target_modules=LANGUAGE_ONLY)
    result = export_merged(tiny_model_dir, adapter, tmp_path / "merged", dtype="fp32", max_check_examples=1)
    assert result.ignored_by_unmerged_server == []


def test_bf16_export_reports_difference_size(tiny_model_dir, adapter_dir, tmp_path):
    result = export_merged(tiny_model_dir, adapter_dir, tmp_path / "merged", dtype="bf16", max_check_examples=1)
    card = json.loads(result.card_path.read_text())
    assert card["dtype"] == "bfloat16"
    assert card["check"]["max_abs_logit_diff"] == result.max_abs_logit_diff
    # bf16 rounding of the merged weights: small, never a different model.
    assert result.max_abs_logit_diff < 0.5


def test_check_examples_from_jsonl(tiny_model_dir, adapter_dir, tmp_path):
    from PIL import Image

    image = tmp_path / "face.png"
    Image.new("RGB", (40, 40), (120, 90, 60)).save(image)
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "which syndrome ?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "williams"}]},
        ],
        "images": [str(image)], "label": "Williams",
    }
    examples = tmp_path / "val.jsonl"
    examples.write_text(json.dumps(row) + "\n")
    result = export_merged(tiny_model_dir, adapter_dir, tmp_path / "merged", dtype="fp32", check_examples=examples)
    assert [check.example for check in result.checks] == ["val.jsonl:1"]
    assert result.agree


def test_quantized_model_rejected(tiny_model_dir, adapter_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    model.is_loaded_in_4bit = True  # what transformers sets when bitsandbytes loads in 4 bit
    with pytest.raises(ModelError, match="rounds the update to the 4-bit grid"):
        export_merged(model, adapter_dir, tmp_path / "merged")
    with pytest.raises(ModelError, match="loaded with quantised weights"):
        refuse_quantized(model, source="model")


def test_quantized_checkpoint_rejected(tiny_model_dir, adapter_dir, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"stored quantised \(bitsandbytes\)"):
        export_merged(base, adapter_dir, tmp_path / "merged")


def test_qlora_run_card_noted(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "run" / "adapter")
    (tmp_path / "run" / "run_card.json").write_text(json.dumps({"parameters": {"quantization": "4bit"}}))
    result = export_merged(tiny_model_dir, adapter, tmp_path / "merged", dtype="fp32", max_check_examples=1)
    card = json.loads(result.card_path.read_text())
    assert any("4-bit QLoRA" in note for note in card["notes"])
    assert result.agree


@pytest.mark.parametrize(
    ("dtype", "message"),
    [("fp16", "overflows in fp16"), ("int8", "expected bf16 \\(bfloat16\\) or fp32")],
)
def test_bad_dtype_rejected(tiny_model_dir, adapter_dir, tmp_path, dtype, message):
    with pytest.raises(ConfigError, match=message):
        export_merged(tiny_model_dir, adapter_dir, tmp_path / "merged", dtype=dtype)


def test_missing_adapter_rejected(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="has no adapter_config.json"):
        export_merged(tiny_model_dir, tmp_path, tmp_path / "merged")


def test_adapter_for_other_model_rejected(tiny_model_dir, adapter_dir, tmp_path):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(adapter_dir, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["target_modules"] = ["no_such_layer"]
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="does not fit this base model"):
        export_merged(tiny_model_dir, adapter, tmp_path / "merged")


def test_nonempty_out_dir_rejected(tiny_model_dir, adapter_dir, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        export_merged(tiny_model_dir, adapter_dir, out)
    with pytest.raises(ConfigError, match="not an earlier export"):
        export_merged(tiny_model_dir, adapter_dir, out, overwrite=True)
    assert (out / "notes.txt").is_file()


def test_cli_export_runs(tiny_model_dir, adapter_dir, tmp_path):
    from wgsy_lib.cli import main

    code = main(["export", "--base", str(tiny_model_dir), "--adapter", str(adapter_dir),
                 "--out", str(tmp_path / "merged"), "--dtype", "fp32", "--max-check-examples", "1"])
    assert code == 0
    assert (tmp_path / "merged" / EXPORT_CARD_NAME).is_file()


def test_cli_export_bad_dtype_exits_2(tiny_model_dir, adapter_dir, tmp_path, capsys):
    from wgsy_lib.cli import main

    code = main(["export", "--base", str(tiny_model_dir), "--adapter", str(adapter_dir),
                 "--out", str(tmp_path / "merged"), "--dtype", "fp16"])
    assert code == 2
    assert "overflows in fp16" in capsys.readouterr().err


def test_projector_copy_merged_and_listed(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(1)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, target_modules=LANGUAGE_ONLY, modules_to_save=["multi_modal_projector"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    projector = peft_model.base_model.model.model.multi_modal_projector.modules_to_save["default"]
    with torch.no_grad():
        projector.mm_input_projection_weight.add_(0.5)  # a trained projector differs from the base one
    peft_model.save_pretrained(tmp_path / "adapter")
    AutoProcessor.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "adapter")

    result = export_merged(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged", dtype="fp32", max_check_examples=1)
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert result.agree
    assert "multi_modal_projector (full copy in modules_to_save)" in result.ignored_by_unmerged_server
    assert not torch.equal(merged.model.multi_modal_projector.mm_input_projection_weight,
                           base.model.multi_modal_projector.mm_input_projection_weight)


def _fake_results(tmp_path: Path, tiny_model_dir: Path, adapter: Path, selected: str):
    from types import SimpleNamespace

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "selection.json").write_text(json.dumps({"selected": selected}))
    models = [SimpleNamespace(name="base", adapter=None), SimpleNamespace(name="cell-1", adapter=adapter)]
    plan = SimpleNamespace(output_dir=tmp_path / "eval", models=models, files=[],
                           config=SimpleNamespace(base_model=str(tiny_model_dir)))
    return SimpleNamespace(plan=plan)


def test_export_selected_merges_chosen_adapter(tiny_model_dir, adapter_dir, tmp_path):
    from wgsy_lib.export import export_selected

    results = _fake_results(tmp_path, tiny_model_dir, adapter_dir, "cell-1")
    exported = export_selected(results, out_dir=tmp_path / "merged", dtype="fp32")
    assert exported is not None
    assert exported.agree


def test_export_selected_skips_base_and_empty(tiny_model_dir, adapter_dir, tmp_path):
    from wgsy_lib.export import export_selected

    results = _fake_results(tmp_path, tiny_model_dir, adapter_dir, "base")
    assert export_selected(results, out_dir=tmp_path / "merged") is None
    assert export_selected(results, out_dir="") is None
    assert not (tmp_path / "merged").exists()
