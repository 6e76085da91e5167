"""`wgsy demo --quick` end to end, as CI runs it: every stage, its reports, its summary, and a rerun
that reuses everything.

The first run builds the tiny model and the phantom cohort and runs 01-04 through papermill, in
about 1.5 to 2.5 minutes on 2 CPU cores. The second run must find everything done and finish in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from wgsy_lib.demo import run_demo
from wgsy_lib.report import image_outputs, remove_photos

STAGES = ("01_annotate", "02_convert", "04_evaluate")


def _snapshot(out_dir: Path) -> dict[str, float]:
    """Modification times of what a rerun must not rewrite."""
    watched = [out_dir / "tiny-model" / "config.json", out_dir / "phantom" / "manifest.csv",
               out_dir / "annotations.jsonl", out_dir / "data" / "train.jsonl"]
    watched += [out_dir / "notebooks" / f"{stage}.ipynb" for stage in STAGES]
    watched += sorted(out_dir.glob("grid/*/adapter/adapter_model.safetensors"))
    return {str(path): path.stat().st_mtime_ns for path in watched}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo") / "out"
    first = run_demo(out_dir=out_dir, quick=True)
    before = _snapshot(out_dir)
    store_lines = (out_dir / "annotations.jsonl").read_text(encoding="utf-8").count("\n")
    second = run_demo(out_dir=out_dir, quick=True)
    return {"out": out_dir, "first": first, "second": second, "before": before, "store_lines": store_lines}


def test_demo_runs_every_stage(demo):
    out = demo["out"]
    for stage in STAGES:
        assert (out / "notebooks" / f"{stage}.ipynb").is_file(), stage
    cells = sorted(out.glob("grid/*/03_train.ipynb"))
    assert len(cells) == 2
    for notebook in cells:
        assert (notebook.parent / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "evaluate" / "comparison.csv").is_file()


def test_reports_keep_only_plots(demo):
    out = demo["out"]
    reports = sorted((out / "reports").glob("*.html"))
    assert {path.stem for path in reports} >= {"01_annotate", "02_convert", "04_evaluate"}
    assert len(reports) == 5
    assert sorted(Path(path) for path in demo["second"].reports) == reports
    for report in reports:
        html = report.read_text(encoding="utf-8")
        assert "data:image/jpeg" not in html.lower(), f"{report.name} embeds a JPEG (a photo)"

    executed = sorted((out / "notebooks").glob("*.ipynb")) + sorted(out.glob("grid/*/03_train.ipynb"))
    # NOTE: the demo's 01_annotate sets show_photos, but the untrained tiny model returns no `ok`
    # annotation, so no photo is drawn. tests/test_evaluation.py covers removing photos from reports.
    for path in executed:
        notebook = nbformat.read(path, as_version=4)
        cleaned, _removed = remove_photos(notebook)
        # A report keeps only marked plots: nothing unmarked or marked as a photo remains.
        assert {mark for _cell, mark in image_outputs(cleaned)} <= {"plot"}, path

    # Every stage draws plots (feature counts, class balance, loss curve, confusion matrices and ROC
    # curves), and each report keeps them.
    for path in executed:
        notebook = nbformat.read(path, as_version=4)
        plots = [mark for _cell, mark in image_outputs(notebook) if mark == "plot"]
        assert plots, f"{path} has no marked plot"
        name = path.stem if path.parent.name == "notebooks" else f"03_train-{path.parent.name}"
        html = (out / "reports" / f"{name}.html").read_text(encoding="utf-8")
        assert html.count("data:image/png") >= len(plots), f"{name}.html lost a plot"


def test_summary_headline_rows(demo):
    out = demo["out"]
    summary = json.loads((out / "demo_summary.json").read_text(encoding="utf-8"))
    selected = summary["selected"]
    assert selected in {path.parent.name for path in out.glob("grid/*/03_train.ipynb")}
    roles = {row["role"]: row for row in summary["headline"]}
    assert set(roles) == {"selected on validation", "zero-shot baseline"}
    assert roles["selected on validation"]["model"] == selected
    assert roles["zero-shot baseline"]["model"] == "base"
    for row in roles.values():
        assert 0.0 <= row["balanced_accuracy"] <= 1.0
        assert 0.0 < row["chance_balanced_accuracy"] < 1.0
    text = "\n".join(demo["second"].lines())
    assert "SYNTHETIC" in text
    assert "zero-shot baseline" in text


def test_rerun_reuses_everything(demo):
    out, first, second = demo["out"], demo["first"], demo["second"]
    assert _snapshot(out) == demo["before"], "the rerun rewrote a model, cohort, store, notebook or adapter"
    assert (out / "annotations.jsonl").read_text(encoding="utf-8").count("\n") == demo["store_lines"]
    for cell in out.glob("grid/*"):
        if cell.is_dir():
            assert json.loads((cell / "cell_status.json").read_text(encoding="utf-8"))["returncode"] == 0
    ran = first.seconds - first.steps["reports"]
    reran = second.seconds - second.steps["reports"]
    assert reran < ran / 5, f"the rerun took {reran:.0f} s against {ran:.0f} s for the first run"


def test_demo_help(capsys):
    from wgsy_lib.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--fresh", "--out"):
        assert option in text
