"""The 04_evaluate stage: parameters, model discovery, a headless run and its HTML report."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest

from eval_helpers import make_adapter, make_photos, write_eval_jsonl
from wgsy_lib.errors import ConfigError, ModelError
from wgsy_lib.evaluation import EvaluateConfig, discover_models
from wgsy_lib.report import export_html, image_outputs
from wgsy_lib.runner import run_notebook


@pytest.fixture(scope="module")
def evaluation_inputs(tmp_path_factory, tiny_model_dir, labels):
    """A grid folder with two adapter cells (one unfinished cell beside them) and val/test files."""
    root = tmp_path_factory.mktemp("evaluate")
    grid = root / "grid"
    make_adapter(tiny_model_dir, grid / "r4_seed1", seed=1)
    make_adapter(tiny_model_dir, grid / "r4_seed2", seed=2)
    (grid / "unfinished" / "adapter").mkdir(parents=True)
    val = write_eval_jsonl(root / "data" / "val.jsonl", make_photos(root / "photos", 6, seed=1), labels, split="val")
    test = write_eval_jsonl(root / "data" / "test.jsonl", make_photos(root / "photos", 6, seed=2), labels)
    return {"root": root, "grid": grid, "val": val, "test": test}


def _parameters(tiny_model_dir, inputs, **overrides):
    values = {
        "base_model": str(tiny_model_dir), "runs_dir": str(inputs["grid"]), "val_file": str(inputs["val"]),
        "test_files": [str(inputs["test"])], "batch_size": 6, "max_new_tokens": 8, "n_bootstrap": 20,
        "output_dir": str(inputs["root"] / "out"),
    }
    values.update(overrides)
    return values


def test_headless_run_compares_base_and_two_adapters(tmp_path, tiny_model_dir, evaluation_inputs):
    parameters = _parameters(tiny_model_dir, evaluation_inputs)
    output = tmp_path / "04_evaluate.ipynb"
    run = run_notebook("04_evaluate", output, parameters, timeout_s=600)
    assert run.ok, run.log_file.read_text()[-3000:]
    print(f"04_evaluate ran in {run.seconds:.0f} s")

    out = evaluation_inputs["root"] / "out"
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(comparison["model"]) == {"base", "r4_seed1", "r4_seed2"}
    assert set(comparison["mode"]) == {"score", "generate"}
    assert set(comparison["file"]) == {"val", "test"}
    assert (comparison["chance_balanced_accuracy"] == 0.25).all()

    selection = json.loads((out / "selection.json").read_text())
    assert selection["selected"] in {"r4_seed1", "r4_seed2"}
    assert "test" in selection["test"]

    for mode in ("score", "generate"):
        folder = out / "r4_seed1" / "test" / mode
        for name in ("predictions.jsonl", "errors.jsonl", "metrics.json", "confusion_matrix.png"):
            assert (folder / name).is_file(), f"{folder / name} missing"
    score_lines = (out / "base" / "test" / "score" / "predictions.jsonl").read_text().splitlines()
    assert len(score_lines) == 6
    assert set(json.loads(score_lines[0])["probabilities"]) == {"Williams syndrome", "Down syndrome",
                                                                "Goldenhar syndrome", "healthy control"}
    generated = json.loads((out / "base" / "test" / "generate" / "predictions.jsonl").read_text().splitlines()[0])
    assert {"raw_output", "parsed", "status", "predicted"} <= set(generated)
    metrics = json.loads((out / "r4_seed2" / "test" / "score" / "metrics.json").read_text())
    assert "accuracy" in metrics["intervals"]
    assert (out / "r4_seed2" / "test" / "score" / "roc.png").is_file()

    # The two adapters must really change the model: identical probabilities would mean the adapter was ignored.
    base_scores = json.loads(score_lines[0])["probabilities"]
    adapter_line = (out / "r4_seed1" / "test" / "score" / "predictions.jsonl").read_text().splitlines()[0]
    assert json.loads(adapter_line)["probabilities"] != base_scores

    executed = nbformat.read(output, as_version=4)
    marks = image_outputs(executed)
    assert marks, "the executed notebook shows no plots"
    assert all(mark == "plot" for _cell, mark in marks)
    html = export_html(output, exclude_code=True)
    text = html.read_text()
    assert "Secondary" in text
    assert "start_notebook(EvaluateConfig" not in text


def test_missing_base_model_message():
    with pytest.raises(ConfigError, match="base_model is empty"):
        EvaluateConfig.from_mapping({"test_files": ["x.jsonl"], "output_dir": "out"})


def test_missing_test_files_message():
    with pytest.raises(ConfigError, match="no test files"):
        EvaluateConfig.from_mapping({"base_model": "m", "output_dir": "out"})


def test_unknown_mode_message():
    with pytest.raises(ConfigError, match="modes must be"):
        EvaluateConfig.from_mapping({"base_model": "m", "output_dir": "o", "test_files": ["t"], "modes": ["sample"]})


def test_auc_selection_needs_scoring():
    with pytest.raises(ConfigError, match="auc_macro"):
        EvaluateConfig.from_mapping({"base_model": "m", "output_dir": "o", "test_files": ["t"], "modes": ["generate"],
                                     "selection_mode": "generate", "selection_metric": "auc_macro"})


def test_modes_from_papermill_string():
    config = EvaluateConfig.from_mapping({"base_model": "m", "output_dir": "o", "test_files": "a.jsonl, b.jsonl",
                                          "modes": "[score]"})
    assert config.test_files == ["a.jsonl", "b.jsonl"]
    assert config.modes == ["score"]


def test_discover_models_skips_unfinished_cells(tiny_model_dir, evaluation_inputs):
    config = EvaluateConfig.from_mapping(_parameters(tiny_model_dir, evaluation_inputs))
    names = [spec.name for spec in discover_models(config)]
    assert names == ["base", "r4_seed1", "r4_seed2"]


def test_adapter_without_weights_message(tmp_path, tiny_model_dir, evaluation_inputs):
    config = EvaluateConfig.from_mapping(_parameters(tiny_model_dir, evaluation_inputs, runs_dir="",
                                                     adapters=[str(tmp_path)]))
    with pytest.raises(ConfigError, match="has no adapter_model.safetensors"):
        discover_models(config)


def test_mismatched_adapter_is_error(tmp_path, tiny_model_dir):
    from wgsy_lib.model_loading import attach_adapter, load_for_evaluation
    from safetensors.torch import load_file, save_file

    run_dir = make_adapter(tiny_model_dir, tmp_path / "cell", seed=3)
    weights_file = run_dir / "adapter" / "adapter_model.safetensors"
    weights = load_file(weights_file)
    renamed = {key.replace("q_proj", "not_a_layer"): value for key, value in weights.items()}
    save_file(renamed, weights_file)
    model, _processor = load_for_evaluation(str(tiny_model_dir), device="cpu", dtype="fp32")
    with pytest.raises(ModelError, match="does not match"):
        attach_adapter(model, run_dir / "adapter")


def _notebook_with_images():
    import base64

    from nbformat.v4 import new_code_cell, new_notebook, new_output

    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    cells = [
        new_code_cell("show_plots(results)", outputs=[new_output("display_data", data={"image/png": png},
                                                                 metadata={"wgsy": {"kind": "plot"}})]),
        new_code_cell("show_example_photos(results)", outputs=[new_output("display_data", data={"image/png": png},
                                                                          metadata={"wgsy": {"kind": "photo"}})]),
        new_code_cell("Image.open(path)", outputs=[new_output("execute_result", data={"image/png": png, "text/plain": "img"},
                                                              execution_count=1)]),
        new_code_cell("HTML(...)", outputs=[new_output("display_data", data={"text/html": f'<img src="data:image/png;base64,{png}">'})]),
        new_code_cell("1 + 1", outputs=[new_output("execute_result", data={"text/plain": "2"}, execution_count=2)]),
    ]
    return new_notebook(cells=cells)


def test_report_keeps_plots_and_removes_photos(tmp_path):
    path = tmp_path / "run.ipynb"
    nbformat.write(_notebook_with_images(), path)
    html = export_html(path).read_text()
    # The page template carries one small CSS image of its own; count images in <img> tags only.
    assert html.count('src="data:image/') == 1
    assert "image removed from this report" in html


def test_report_includes_marked_photos_on_request(tmp_path):
    from wgsy_lib.report import remove_photos

    cleaned, removed = remove_photos(_notebook_with_images(), include_photos=True)
    assert removed == 2
    assert [mark for _cell, mark in image_outputs(cleaned)] == ["plot", "photo"]


def test_report_cli_without_code(tmp_path):
    from wgsy_lib.cli import main

    path = tmp_path / "run.ipynb"
    nbformat.write(_notebook_with_images(), path)
    assert main(["report", str(path), "--no-code", "--output", str(tmp_path / "report.html")]) == 0
    text = (tmp_path / "report.html").read_text()
    assert "show_example_photos(results)" not in text
    assert text.count('src="data:image/') == 1


def test_report_missing_notebook_message(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        export_html(tmp_path / "missing.ipynb")


def test_plots_draw_missing_class_and_roc(tmp_path):
    import numpy as np

    from wgsy_lib.metrics import classification_metrics
    from wgsy_lib.plots import plot_confusion_matrix, plot_roc_curves, save_figure

    classes = ["Williams syndrome", "Down syndrome", "Goldenhar syndrome", "healthy control"]
    y_true = ["Williams syndrome", "Down syndrome", "healthy control", "Down syndrome"]
    probabilities = np.full((4, 4), 0.25)
    with pytest.warns(Warning):
        metrics = classification_metrics(y_true, ["Williams syndrome", "Unknown", "healthy control", "Down syndrome"],
                                         classes, probabilities=probabilities, n_bootstrap=0)
    assert save_figure(plot_confusion_matrix(metrics), tmp_path / "cm.png", "confusion matrix").stat().st_size > 0
    assert save_figure(plot_roc_curves(metrics), tmp_path / "roc.png", "ROC").stat().st_size > 0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_library_run_on_two_test_files(tmp_path, tiny_model_dir, labels):
    from wgsy_lib.evaluation import plan_evaluation, run_evaluation, secondary_test_table

    first = write_eval_jsonl(tmp_path / "clinic_a" / "test.jsonl", make_photos(tmp_path / "a", 4, seed=3), labels)
    second = write_eval_jsonl(tmp_path / "clinic_b" / "test.jsonl", make_photos(tmp_path / "b", 4, seed=4), labels)
    config = EvaluateConfig.from_mapping({
        "base_model": str(tiny_model_dir), "test_files": [str(first), str(second)], "modes": ["score"],
        "n_bootstrap": 10, "output_dir": str(tmp_path / "out"),
    })
    results = run_evaluation(plan_evaluation(config))
    assert set(results.comparison["file"]) == {"clinic_a-test", "clinic_b-test"}
    assert results.selection["selected"] is None
    assert (tmp_path / "out" / "base" / "clinic_b-test" / "score" / "metrics.json").is_file()
    assert set(secondary_test_table(results)["note"]) == {"secondary: not for model selection"}


def test_detached_adapter_restores_base(tmp_path, tiny_model_dir, labels):
    import numpy as np

    from wgsy_lib.inference import read_eval_file, score_labels
    from wgsy_lib.model_loading import attach_adapter, detach_adapter, load_for_evaluation

    run_dir = make_adapter(tiny_model_dir, tmp_path / "cell", seed=5)
    examples = read_eval_file(write_eval_jsonl(tmp_path / "t.jsonl", make_photos(tmp_path, 2), labels), labels)
    model, processor = load_for_evaluation(str(tiny_model_dir), device="cpu", dtype="fp32")

    def probabilities(current):
        return np.array([item.probabilities for item in score_labels(current, processor, examples, labels).results])

    before = probabilities(model)
    peft_model = attach_adapter(model, run_dir / "adapter")
    with_adapter = probabilities(peft_model)
    after = probabilities(detach_adapter(peft_model))
    assert not np.allclose(before, with_adapter)
    np.testing.assert_allclose(before, after, atol=1e-6)


def test_file_listed_twice_message(tmp_path, tiny_model_dir, labels):
    from wgsy_lib.evaluation import plan_evaluation

    path = write_eval_jsonl(tmp_path / "val.jsonl", make_photos(tmp_path, 2), labels)
    config = EvaluateConfig.from_mapping({"base_model": str(tiny_model_dir), "val_file": str(path),
                                          "test_files": [str(path)], "output_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match="listed more than once"):
        plan_evaluation(config)


def test_evaluate_cli_rejects_bad_parameter(tmp_path, capsys):
    from wgsy_lib.cli import main

    params = tmp_path / "04_evaluate.yaml"
    params.write_text("base_model: m\ntest_files: [t.jsonl]\noutput_dir: out\nbatch_sise: 4\n")
    assert main(["evaluate", str(params)]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err
