"""Every stage notebook follows the same shape: narrative, one parameters cell whose names and
defaults match the stage's config class, a validation cell, one library call per step, and no
outputs or function definitions committed."""

from __future__ import annotations

import ast
import importlib

import nbformat
import pytest

from wgsy_lib.paths import notebooks_dir

# notebook stem -> (module, config class) of its validated parameters
NOTEBOOK_CONFIGS = {
    "01_annotate": ("wgsy_lib.annotate", "AnnotateConfig"),
    "02_convert": ("wgsy_lib.convert", "ConvertConfig"),
    "03_train": ("wgsy_lib.training", "TrainConfig"),
    "04_evaluate": ("wgsy_lib.evaluation", "EvaluateConfig"),
}


def _notebooks():
    return sorted(notebooks_dir().glob("*.ipynb"))


def _parameters_cell(notebook):
    tagged = [cell for cell in notebook.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must carry the 'parameters' tag"
    return tagged[0]


@pytest.mark.parametrize("path", _notebooks(), ids=lambda path: path.stem)
def test_notebook_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} of {path.name} has outputs; clear them before committing"
            assert cell.execution_count is None, f"cell {index} of {path.name} has an execution count"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda path: path.stem)
def test_notebook_defines_no_functions(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), (
                f"cell {index} of {path.name} defines a function or class; move it into wgsy_lib"
            )


@pytest.mark.parametrize("path", _notebooks(), ids=lambda path: path.stem)
def test_parameters_cell_matches_config(path):
    notebook = nbformat.read(path, as_version=4)
    cell = _parameters_cell(notebook)
    lines = [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    defaults = {}
    for line in lines:
        assert "#" in line, f"{path.name}: parameter line {line!r} needs a trailing comment saying what it sets"
        statement = ast.parse(line).body[0]
        assert isinstance(statement, ast.Assign), f"{path.name}: {line!r} is not a plain assignment"
        defaults[statement.targets[0].id] = ast.literal_eval(statement.value)

    module_name, class_name = NOTEBOOK_CONFIGS[path.stem]
    config_class = getattr(importlib.import_module(module_name), class_name)
    assert list(defaults) == list(config_class.model_fields), f"{path.name}: parameters cell and {class_name} differ"
    for name, value in defaults.items():
        field = config_class.model_fields[name]
        if field.is_required():
            continue
        assert config_class.model_fields[name].default == value or (
            isinstance(value, list) and list(field.default) == value
        ), f"{path.name}: default of {name} is {value!r} in the notebook but {field.default!r} in {class_name}"

    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert f"start_notebook({class_name}, globals())" in source, f"{path.name} must validate with start_notebook"
