"""The fp16 override and the NaN loss guard stopping a training run."""

from __future__ import annotations

import math

import pytest
import torch

from wgsy_lib.errors import ConfigError, ModelError
from wgsy_lib.precision import NonFiniteLossGuard, check_loss, fp16_override


@pytest.mark.parametrize("requested", ["auto", "bf16", "fp32"])
def test_override_ignores_other_dtypes(requested):
    assert fp16_override(requested, allow_fp16=True, device="cuda") is None


def test_fp16_without_override_rejected():
    with pytest.raises(ConfigError, match="overflows in Gemma 3.*set allow_fp16 to true"):
        fp16_override("fp16", allow_fp16=False, device="cuda")


def test_fp16_with_override_warns(caplog):
    with caplog.at_level("WARNING", logger="wgsy_lib.precision"):
        dtype = fp16_override("fp16", allow_fp16=True, device="cuda")
    assert dtype == torch.float16
    assert "known to overflow" in caplog.text


def test_fp16_on_cpu_rejected():
    with pytest.raises(ConfigError, match="needs a CUDA GPU, but the device is cpu"):
        fp16_override("fp16", allow_fp16=True, device="cpu")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_check_loss_rejects_non_finite(value):
    with pytest.raises(ModelError, match="training stopped at step 7: logged loss is"):
        check_loss(value, step=7)


def test_check_loss_warns_on_zero(caplog):
    with caplog.at_level("WARNING", logger="wgsy_lib.precision"):
        check_loss(0.0, step=2)
    assert "exactly 0" in caplog.text


class LossTurnsNan(torch.nn.Module):
    """A one-weight model whose loss becomes NaN from the `nan_from`-th forward pass on."""

    def __init__(self, nan_from: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.calls = 0
        self.nan_from = nan_from

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.calls += 1
        loss = ((self.weight * x - labels) ** 2).mean()
        if self.calls >= self.nan_from:
            loss = loss * float("nan")
        return {"loss": loss}


class PairDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor([1.0]), "labels": torch.tensor([2.0])}


def test_guard_stops_trainer_at_nan_step(tmp_path):
    from transformers import Trainer, TrainingArguments

    arguments = TrainingArguments(
        output_dir=str(tmp_path), max_steps=20, logging_steps=1, per_device_train_batch_size=1,
        report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
    )
    trainer = Trainer(model=LossTurnsNan(nan_from=4), args=arguments, train_dataset=PairDataset(),
                      callbacks=[NonFiniteLossGuard(precision="fp16")])
    with pytest.raises(ModelError, match="training stopped at step 4: logged loss is nan under fp16"):
        trainer.train()
    assert trainer.state.global_step == 4
    # The Trainer's default filter would have averaged the NaN away before logging it.
    assert arguments.logging_nan_inf_filter is False


def test_guard_lets_finite_run_finish(tmp_path):
    from transformers import Trainer, TrainingArguments

    arguments = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, logging_steps=1, per_device_train_batch_size=1,
        report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
    )
    trainer = Trainer(model=LossTurnsNan(nan_from=1000), args=arguments, train_dataset=PairDataset(),
                      callbacks=[NonFiniteLossGuard(precision="fp16")])
    trainer.train()
    assert trainer.state.global_step == 3


def test_train_stage_rejects_fp16_without_override(tiny_model_dir, tmp_path):
    from test_training import _data_dir
    from wgsy_lib.training import TrainConfig, prepare_run

    config = TrainConfig.from_mapping({"model_name_or_path": str(tiny_model_dir), "data_dir": str(_data_dir(tmp_path)),
                                       "output_dir": str(tmp_path / "run"), "dtype": "fp16"})
    with pytest.raises(ConfigError, match="set allow_fp16 to true"):
        prepare_run(config)
