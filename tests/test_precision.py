"""Precision choice (bf16, fp32, fp16 only on request) and the NaN loss guard stopping a run."""

from __future__ import annotations

import math

import pytest
import torch

from wgsy_lib.errors import ConfigError, ModelError
from wgsy_lib.precision import NonFiniteLossGuard, check_loss, resolve_precision


def test_cpu_trains_in_fp32():
    precision = resolve_precision("cpu")
    assert precision.dtype == torch.float32
    assert precision.trainer_flags() == {"bf16": False, "fp16": False}
    assert "fp32 because" in precision.reason


def test_gpu_without_bf16_gets_fp32(monkeypatch):
    monkeypatch.setattr("wgsy_lib.precision.device_supports_bf16", lambda device: False)
    precision = resolve_precision("cuda")
    assert precision.name == "fp32"
    assert "fp16 overflows in Gemma 3" in precision.reason


def test_gpu_with_bf16_gets_bf16(monkeypatch):
    monkeypatch.setattr("wgsy_lib.precision.device_supports_bf16", lambda device: True)
    precision = resolve_precision("cuda")
    assert precision.name == "bf16"
    assert precision.trainer_flags() == {"bf16": True, "fp16": False}


def test_fp16_without_override_rejected():
    with pytest.raises(ConfigError, match="overflows in Gemma 3.*allow_fp16=True"):
        resolve_precision("cuda", "fp16")


def test_fp16_with_override_warns(monkeypatch, caplog):
    monkeypatch.setattr("wgsy_lib.precision.device_supports_bf16", lambda device: False)
    with caplog.at_level("WARNING", logger="wgsy_lib.precision"):
        precision = resolve_precision("cuda", "fp16", allow_fp16=True)
    assert precision.trainer_flags() == {"bf16": False, "fp16": True}
    assert precision.needs_loss_guard
    assert "known to overflow" in caplog.text


def test_fp16_on_cpu_rejected():
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        resolve_precision("cpu", "fp16", allow_fp16=True)


def test_bf16_without_support_rejected():
    with pytest.raises(ConfigError, match="has no bf16 support"):
        resolve_precision("cpu", "bf16")


def test_unknown_precision_rejected():
    with pytest.raises(ConfigError, match="precision is 'half'; expected one of auto, bf16, fp32, fp16"):
        resolve_precision("cpu", "half")


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
