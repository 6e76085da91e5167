"""02_convert runs headless through papermill with the demo parameter file's settings."""

from __future__ import annotations

import json

import yaml

from convert_cohort import annotate, make_cohort
from wgsy_lib.paths import params_dir
from wgsy_lib.runner import run_notebook


def test_notebook_runs_headless(tmp_path):
    manifest = make_cohort(tmp_path / "cohort")
    store = annotate(manifest, tmp_path / "annotations.jsonl")
    parameters = yaml.safe_load((params_dir() / "demo" / "02_convert.yaml").read_text(encoding="utf-8"))
    parameters.update(manifest=str(manifest), annotations=[str(store)], output_dir=str(tmp_path / "data"))

    run = run_notebook("02_convert", tmp_path / "02_convert.ipynb", parameters, timeout_s=300)

    assert run.ok, run.log_file.read_text(encoding="utf-8")[-3000:]
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "data_card.json", "data_card.md", "problems.csv"):
        assert (tmp_path / "data" / name).is_file(), name
    executed = json.loads(run.output.read_text(encoding="utf-8"))
    outputs = [output for cell in executed["cells"] if cell["cell_type"] == "code" for output in cell.get("outputs", [])]
    assert any("image/png" in output.get("data", {}) for output in outputs), "the split plot is missing"
    # No photo is shown unless show_photos is set: the only image output is the one plot.
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 1
