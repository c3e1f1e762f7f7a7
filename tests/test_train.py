import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from syllabus.classify import ClassificationTask
from syllabus.errors import RunFailed, UsageError
from syllabus.runs import Run, load_checkpoint, save_checkpoint
from syllabus.train import TrainConfig, fit


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return TensorDataset(x, y)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def _fit(tmp_path, name, epochs=4, **kw):
    settings = {"epochs": epochs, "batch_size": 8, "optimizer": "sgd", "lr": 0.05, "log_every": 3}
    cfg = TrainConfig(**{**settings, **kw.pop("cfg", {})})
    model = _model()
    run = Run(tmp_path / name, device="cpu")
    train = DataLoader(_data(), batch_size=8, shuffle=True)
    val = DataLoader(_data(32, seed=1), batch_size=16)
    result = fit(model, train, val, ClassificationTask(3), cfg, run, seed=3, **kw)
    return model, run, result


def _epoch_rows(run):
    return [r for r in run.read_metrics() if "step" not in r]


def test_fit_logs_and_checkpoints(tmp_path):
    model, run, result = _fit(tmp_path, "a")
    rows = _epoch_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for key in ("train/loss", "train/accuracy", "train/macro_f1", "val/loss", "val/accuracy", "time/epoch"):
        assert key in rows[0]
    assert run.checkpoint("last").exists() and run.checkpoint("best").exists()
    best = max(r["val/accuracy"] for r in rows)
    assert result.best_value == best
    assert load_checkpoint(run.checkpoint("best"))["epoch"] == result.best_epoch
    assert any("train/step_loss" in r for r in run.read_metrics())


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    full_model, full_run, _ = _fit(tmp_path, "full")

    def interrupt(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "resumed", on_epoch_end=interrupt)
    resumed_model, resumed_run, _ = _fit(tmp_path, "resumed")
    drop = ("time/epoch",)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(_epoch_rows(resumed_run)) == strip(_epoch_rows(full_run))
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    _fit(tmp_path, "nan", epochs=1)

    class Boom(ClassificationTask):
        def step(self, model, batch):
            loss, extra = super().step(model, batch)
            return loss * float("nan"), extra

    run = Run(tmp_path / "nan", device="cpu")
    before = run.checkpoint("last").read_bytes()
    cfg = TrainConfig(epochs=2, batch_size=8)
    with pytest.raises(RunFailed, match="loss became nan at epoch 2.*last.pt"):
        fit(_model(), DataLoader(_data(), batch_size=8), DataLoader(_data(), batch_size=8), Boom(3), cfg, run)
    assert run.checkpoint("last").read_bytes() == before


def test_early_stopping(tmp_path):
    _, run, result = _fit(tmp_path, "es", epochs=30, cfg={"early_stop": 2, "monitor": "val/loss", "lr": 0.0})
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_unknown_monitor_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a logged metric"):
        _fit(tmp_path, "m", epochs=1, cfg={"monitor": "val/nothing"})


def test_checkpoint_write_is_atomic_and_corrupt_file_named(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.ones(2)})
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="corrupt checkpoint: .*c.pt"):
        load_checkpoint(path)
    with pytest.raises(UsageError, match="missing checkpoint"):
        load_checkpoint(tmp_path / "none.pt")


def test_corrupt_metrics_line_is_named(tmp_path):
    run = Run(tmp_path / "r")
    run.log({"epoch": 1})
    with open(run.metrics_path, "a") as f:
        f.write("{broken\n")
    with pytest.raises(UsageError, match="corrupt line 2"):
        run.read_metrics()
    assert json.loads(run.metrics_path.read_text().splitlines()[0]) == {"epoch": 1}
