"""The LoRA grid: expansion into cells, parameter files, and papermill runs that resume and fail alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from wgsy_lib.errors import ConfigError
from wgsy_lib.grid import (PARAMS_FILE, expand_cells, is_cell_done, leaderboard_rows, load_grid, run_grid,
                           write_cell_parameters)
from wgsy_lib.paths import params_dir

from training_helpers import write_phantom_jsonl

# A few steps of the tiny model: enough to write a checkpoint, an adapter and metrics.
FAST = {"max_steps": 2, "save_steps": 1, "eval_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "per_device_eval_batch_size": 2, "gradient_checkpointing": False,
        "val_max_examples": 4, "torch_threads": 1, "r": 4, "lora_alpha": 8}


def _grid_file(tmp_path: Path, base: dict, axes: dict, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "runs"), "base": base, "axes": axes}))
    return path


def test_default_grid_is_rank_by_dropout():
    spec = load_grid(params_dir() / "grid.yaml")
    cells = expand_cells(spec)
    assert len(cells) == 9
    assert {cell.axis_values["r"] for cell in cells} == {4, 8, 16}
    assert {cell.axis_values["lora_dropout"] for cell in cells} == {0.1, 0.2, 0.3}
    assert "r16-lora_dropout0.1" in {cell.name for cell in cells}


def test_cell_parameter_file_is_resolved(tmp_path):
    spec = load_grid(_grid_file(tmp_path, {"model_name_or_path": "m", "data_dir": "d"}, {"r": [4, 8]}))
    cell = expand_cells(spec)[1]
    written = yaml.safe_load(write_cell_parameters(cell).read_text())
    assert written == {"model_name_or_path": "m", "data_dir": "d", "r": 8, "output_dir": str(tmp_path / "runs" / "r8")}


def test_list_axis_named_by_index(tmp_path):
    spec = load_grid(_grid_file(tmp_path, {}, {"target_modules": [["q_proj"], ["q_proj", "v_proj"]]}))
    assert [cell.name for cell in expand_cells(spec)] == ["target_modulesi0", "target_modulesi1"]


@pytest.mark.parametrize("axes, expected", [
    ({"rank": [4]}, "axis 'rank' is not a 03_train parameter"),
    ({"output_dir": ["a", "b"]}, "output_dir cannot be an axis"),
    ({"r": []}, "axis 'r' must be a non-empty list"),
    ({"r": 4}, "axis 'r' must be a non-empty list"),
])
def test_bad_axes_rejected(tmp_path, axes, expected):
    with pytest.raises(ConfigError, match=expected):
        load_grid(_grid_file(tmp_path, {}, axes))


def test_unknown_grid_key_rejected(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"output_dir": "x", "axis": {"r": [4]}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['axis'\]"):
        load_grid(path)


def test_invalid_cell_reported_without_running(tmp_path):
    spec = load_grid(_grid_file(tmp_path, {"model_name_or_path": "m", "data_dir": "d"}, {"lora_dropout": [1.5]}))
    [result] = run_grid(spec)
    assert result.status == "invalid"
    assert "lora_dropout = 1.5" in result.error
    assert (tmp_path / "runs" / "lora_dropout1.5" / PARAMS_FILE).is_file()


def test_cell_not_done_without_exit_status(tmp_path):
    run_dir = tmp_path / "cell"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    (run_dir / "metrics.json").write_text("{}")
    assert not is_cell_done(run_dir)
    (run_dir / "cell_status.json").write_text(json.dumps({"returncode": 1}))
    assert not is_cell_done(run_dir)
    (run_dir / "cell_status.json").write_text(json.dumps({"returncode": 0}))
    assert is_cell_done(run_dir)


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory):
    from wgsy_lib.phantom import phantom_cohort_path

    cohort = phantom_cohort_path(expressivity="exaggerated", subjects_per_class=3, photos_per_subject=2,
                                 duplicate_rate=0.0, seed=1, workers=1)
    return write_phantom_jsonl(cohort.root, tmp_path_factory.mktemp("jsonl"), val_subjects_per_class=1)["train"].parent


def test_grid_runs_cells_and_isolates_failure(tmp_path, tiny_model_dir, phantom_data):
    base = {"model_name_or_path": str(tiny_model_dir), "data_dir": str(phantom_data), **FAST}
    # The second cell names a layer the model does not have: it fails at model set-up, inside papermill.
    spec = load_grid(_grid_file(tmp_path, base, {"target_modules": [["q_proj", "v_proj"], ["qkv_proj"]]}))
    good, bad = run_grid(spec)

    assert good.status == "done", good.error
    run_dir = tmp_path / "runs" / good.name
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "03_train.ipynb").is_file()
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["status"] == "completed"
    assert card["parameters"]["target_modules"] == ["q_proj", "v_proj"]
    assert card["data_files"]
    assert card["libraries"]["torch"]
    assert card["peak_memory_bytes"] > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["per_class"]) == set(metrics["classes"])

    assert bad.status == "failed"
    assert "unknown module name(s) ['qkv_proj']" in bad.error
    assert bad.notebook.endswith("03_train.ipynb")
    assert Path(bad.notebook).is_file()

    leaderboard = (tmp_path / "runs" / "leaderboard.csv").read_text()
    assert good.name in leaderboard
    assert bad.name in leaderboard

    again = {result.name: result.status for result in run_grid(spec, only=[good.name])}
    assert again == {good.name: "skipped"}


def test_killed_cell_resumes_from_checkpoint(tmp_path, tiny_model_dir, phantom_data):
    from wgsy_lib.training_logs import CrashAfterStepCallback

    base = {"model_name_or_path": str(tiny_model_dir), "data_dir": str(phantom_data), **FAST, "max_steps": 3}
    base.pop("r")
    spec = load_grid(_grid_file(tmp_path, base, {"r": [4]}))
    [crashed] = run_grid(spec, cell_env={"r4": {CrashAfterStepCallback.ENV: "1"}})
    assert crashed.status == "failed"
    # The kernel process exits; papermill reports a dead kernel and exits non-zero itself.
    assert crashed.returncode != 0
    assert "Kernel died" in crashed.error
    run_dir = tmp_path / "runs" / "r4"
    assert (run_dir / "checkpoints" / "checkpoint-1").is_dir()

    [resumed] = run_grid(spec)
    assert resumed.status == "done", resumed.error
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["resumed_from"].endswith("checkpoint-1")
    assert card["train"]["global_step"] == 3
    [row] = leaderboard_rows(expand_cells(spec))
    assert row["status"] == "done"


@pytest.mark.slow
def test_grid_through_submitit_local_executor(tmp_path, tiny_model_dir, phantom_data):
    base = {"model_name_or_path": str(tiny_model_dir), "data_dir": str(phantom_data), **FAST}
    base.pop("r")
    spec = load_grid(_grid_file(tmp_path, base, {"r": [4]}))
    [result] = run_grid(spec, executor="submitit-local")
    assert result.status == "done", result.error
