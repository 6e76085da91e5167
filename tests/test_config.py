"""Stage parameters: validation from mappings, YAML files and papermill-injected globals."""

import json
import os
from typing import ClassVar

import pytest
from pydantic import Field, field_validator

from wgsy_lib.config import StageConfig
from wgsy_lib.errors import ConfigError


class ExampleConfig(StageConfig):
    """A small stage config shaped like the real ones."""

    stage: ClassVar[str] = "99_example"

    manifest: str = Field("", description="cohort manifest CSV")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="optimizer learning rate")
    epochs: int = Field(3, ge=1, le=100, description="passes over the training data")
    target_modules: list[str] = Field(["q_proj", "v_proj"], description="LoRA target modules")
    use_bf16: bool = Field(True, description="train in bfloat16 where supported")
    answer_format: str = Field("json", pattern="^(json|diagnosis|binary)$", description="json, diagnosis or binary")

    @field_validator("manifest")
    @classmethod
    def _manifest_set(cls, value: str) -> str:
        if not value:
            raise ValueError("set manifest to the manifest.csv that `wgsy import` wrote")
        return value


BASE = {"manifest": "outputs/cohorts/demo/manifest.csv"}


def test_defaults_validate():
    config = ExampleConfig.from_mapping(BASE)
    assert config.learning_rate == 2e-4
    assert config.target_modules == ["q_proj", "v_proj"]


def test_list_passed_as_string_by_papermill():
    config = ExampleConfig.from_mapping({**BASE, "target_modules": "[q_proj, k_proj, o_proj]"})
    assert config.target_modules == ["q_proj", "k_proj", "o_proj"]


def test_list_passed_as_comma_text():
    config = ExampleConfig.from_mapping({**BASE, "target_modules": "q_proj, v_proj"})
    assert config.target_modules == ["q_proj", "v_proj"]


def test_list_passed_as_single_name():
    assert ExampleConfig.from_mapping({**BASE, "target_modules": "all-linear"}).target_modules == ["all-linear"]


def test_broken_list_text_names_value():
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_mapping({**BASE, "target_modules": "[q_proj, "})
    assert "target_modules" in str(caught.value)
    assert "[q_proj, " in str(caught.value)


def test_yaml_exponent_string_becomes_float(tmp_path):
    # YAML 1.1 reads 2e-4 (no dot) as the string "2e-4".
    path = tmp_path / "params.yaml"
    path.write_text("manifest: m.csv\nlearning_rate: 2e-4\n")
    config = ExampleConfig.from_yaml(path)
    assert config.learning_rate == pytest.approx(2e-4)
    assert isinstance(config.learning_rate, float)


def test_wrong_type_names_parameter_value_and_help():
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_mapping({**BASE, "epochs": "three"})
    message = str(caught.value)
    assert "99_example" in message
    assert "epochs = 'three'" in message
    assert "integer" in message
    assert "passes over the training data" in message


def test_out_of_range_names_limit():
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_mapping({**BASE, "learning_rate": 5})
    assert "learning_rate = 5" in str(caught.value)
    assert "less than or equal to 1" in str(caught.value)


def test_pattern_mismatch_names_allowed_values():
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_mapping({**BASE, "answer_format": "xml"})
    assert "answer_format = 'xml'" in str(caught.value)
    assert "json, diagnosis or binary" in str(caught.value)


def test_empty_required_path_says_what_to_set():
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_mapping({})
    assert "manifest = ''" in str(caught.value)
    assert "set manifest to the manifest.csv" in str(caught.value)


def test_misspelt_name_suggests_closest():
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_mapping({**BASE, "learning_rat": 1e-4})
    message = str(caught.value)
    assert "unknown parameter" in message
    assert "'learning_rat'" in message
    assert "did you mean 'learning_rate'?" in message
    assert "manifest, learning_rate, epochs" in message


def test_unknown_name_without_close_match():
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_mapping({**BASE, "zzz": 1})
    assert "'zzz'" in str(caught.value)
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize("name", ["openai_api_key", "API_KEY", "hf_token", "client_secret", "db_password"])
def test_secret_looking_names_rejected(name):
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_mapping({**BASE, name: "sk-123"})
    message = str(caught.value)
    assert repr(name) in message
    assert "looks like a secret" in message
    assert "environment variable" in message
    # The value itself never appears in the message.
    assert "sk-123" not in message


def test_from_namespace_ignores_modules_functions_and_ipython_names():
    namespace = {
        **BASE,
        "epochs": 5,
        "json": json,
        "os": os,
        "helper": lambda: None,
        "ExampleConfig": ExampleConfig,
        "In": ["", "x = 1"],
        "Out": {},
        "get_ipython": print,
        "exit": object(),
        "_": "last output",
        "__name__": "__main__",
    }
    config = ExampleConfig.from_namespace(namespace)
    assert config.epochs == 5


def test_from_namespace_rejects_injected_typo():
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_namespace({**BASE, "epoch": 5})
    assert "did you mean 'epochs'?" in str(caught.value)
    assert "the parameters of 99_example" in str(caught.value)


def test_yaml_unknown_key_names_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("manifest: m.csv\nepohcs: 2\n")
    with pytest.raises(ConfigError) as caught:
        ExampleConfig.from_yaml(path)
    assert str(path) in str(caught.value)
    assert "did you mean 'epochs'?" in str(caught.value)


def test_yaml_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ExampleConfig.from_yaml(tmp_path / "absent.yaml")


def test_yaml_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must contain a mapping of parameter names to values, not list"):
        ExampleConfig.from_yaml(path)


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("manifest: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        ExampleConfig.from_yaml(path)


def test_relative_yaml_path_resolves_from_repo_root(monkeypatch, tmp_path):
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "x.yaml").write_text("manifest: m.csv\n")
    monkeypatch.setenv("WGSY_ROOT", str(tmp_path))
    monkeypatch.chdir("/")
    assert ExampleConfig.from_yaml("params/x.yaml").manifest == "m.csv"


def test_config_is_frozen_and_dumps():
    config = ExampleConfig.from_mapping(BASE)
    with pytest.raises(Exception):
        config.epochs = 9
    assert config.to_dict()["target_modules"] == ["q_proj", "v_proj"]


def test_path_resolves_from_repo_root(monkeypatch, tmp_path):
    monkeypatch.setenv("WGSY_ROOT", str(tmp_path))
    config = ExampleConfig.from_mapping(BASE)
    assert config.path("manifest") == tmp_path / "outputs/cohorts/demo/manifest.csv"
