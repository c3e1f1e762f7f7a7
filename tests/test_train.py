"""The loop core: logging, checkpoints, exact resume, guards, early stopping, groups, EMA, schedules."""

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from syllabus.classify import ClassifierTrainer
from syllabus.errors import RunFailed, UsageError
from syllabus.runs import Run, load_checkpoint, save_checkpoint
from syllabus.train import StepContext, TrainConfig, Trainer, core, fit, load_best
from syllabus.train.optim import lr_factor


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return TensorDataset(x, y)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def _fit(tmp_path, name, epochs=4, trainer_cls=ClassifierTrainer, **cfg):
    settings = {"epochs": epochs, "batch_size": 8, "optimizer": "sgd", "lr": 0.05, "log_every": 3}
    model = _model()
    run = Run(tmp_path / name, device="cpu")
    trainer = trainer_cls(model, DataLoader(_data(32, seed=1), batch_size=16), 3)
    result = fit(trainer, DataLoader(_data(), batch_size=8, shuffle=True), TrainConfig(**{**settings, **cfg}), run,
                 seed=3)
    return model, run, result


def _epoch_rows(run):
    return [r for r in run.read_metrics() if "step" not in r]


def test_fit_logs_and_checkpoints(tmp_path):
    model, run, result = _fit(tmp_path, "a")
    rows = _epoch_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/macro_f1", "time/epoch"} <= set(rows[0])
    best = max(r["val/accuracy"] for r in rows)
    assert result.best_value == best
    assert load_checkpoint(run.checkpoint("best"))["epoch"] == result.best_epoch == \
        1 + [r["val/accuracy"] for r in rows].index(best)
    steps = [r["step"] for r in run.read_metrics() if "step" in r]
    assert steps == list(range(3, 33, 3))  # 8 steps per epoch, every 3rd step logged


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    full_model, full_run, _ = _fit(tmp_path, "full")
    real_end = core._end_epoch

    def interrupt(record, ctx, trainer):
        real_end(record, ctx, trainer)
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(core, "_end_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "resumed")
    monkeypatch.setattr(core, "_end_epoch", real_end)
    resumed_model, resumed_run, _ = _fit(tmp_path, "resumed")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time/epoch"} for r in rows]  # noqa: E731
    assert strip(resumed_run.read_metrics()) == strip(full_run.read_metrics())
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_finished_run_stays_finished(tmp_path):
    _, run, _ = _fit(tmp_path, "f", epochs=2)
    before = run.metrics_path.read_text()
    _, _, result = _fit(tmp_path, "f", epochs=2)
    assert run.metrics_path.read_text() == before and result.history == []


class _Nan(ClassifierTrainer):
    def train_step(self, batch, ctx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.model(x), y) * (float("nan") if ctx.epoch == 2 else 1.0)
        ctx.update("main", loss)
        return {"loss": loss.item()}


def test_nan_loss_names_optimizer_epoch_and_keeps_last_checkpoint(tmp_path):
    _fit(tmp_path, "nan", epochs=1)
    run = Run(tmp_path / "nan")
    before = run.checkpoint("last").read_bytes()
    with pytest.raises(RunFailed, match="'main' loss became nan at epoch 2, step 9.*last.pt"):
        _fit(tmp_path, "nan2", epochs=2, trainer_cls=_Nan)
    assert run.checkpoint("last").read_bytes() == before


def test_exploding_loss_stops_the_run(tmp_path):
    with pytest.raises(RunFailed, match="exploded"):
        _fit(tmp_path, "boom", epochs=3, lr=9.0, explode=50, optimizer="sgd", momentum=0.99)


def test_non_finite_logged_value_is_named(tmp_path):
    class Odd(ClassifierTrainer):
        def train_step(self, batch, ctx):
            return {**super().train_step(batch, ctx), "g_grad_norm": float("inf")}

    with pytest.raises(RunFailed, match="g_grad_norm became inf at epoch 1"):
        _fit(tmp_path, "odd", epochs=1, trainer_cls=Odd)


def test_early_stopping_uses_the_explicit_mode(tmp_path):
    _, _, result = _fit(tmp_path, "es", epochs=30, early_stop=2, monitor="val/loss", monitor_mode="min", lr=1e-9)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_unknown_monitor_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a logged metric"):
        _fit(tmp_path, "m", epochs=1, monitor="val/nothing")


class _TwoGroups(ClassifierTrainer):
    def param_groups(self, cfg):
        return {"main": [{"params": self.model[0].parameters(), "lr_scale": 0.1},
                         {"params": self.model[3].parameters()}]}


def test_param_groups_get_scaled_rates_and_the_schedule(tmp_path):
    model = _model()
    trainer = _TwoGroups(model, [], 3)
    opt = trainer.make_optimizers(TrainConfig(lr=0.2))["main"]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02, 0.2])
    _, run, _ = _fit(tmp_path, "g", epochs=2, trainer_cls=_TwoGroups, schedule="constant")
    state = load_checkpoint(run.checkpoint("last"))
    assert [g["lr"] for g in state["optimizers"]["main"]["param_groups"]] == pytest.approx([0.005, 0.05])


def test_schedule_factor_matches_torch_schedulers():
    cfg = TrainConfig(epochs=5, schedule="cosine", lr=1.0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    for epoch in range(1, 6):
        assert lr_factor(cfg, 100, epoch) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    step_cfg = TrainConfig(epochs=9, schedule="step", step_size=3, gamma=0.5, warmup_steps=4)
    assert [lr_factor(step_cfg, 100, e) for e in (1, 3, 4, 7)] == pytest.approx([1, 1, 0.5, 0.25])
    assert lr_factor(step_cfg, 1, 1) == pytest.approx(0.25)  # warm-up: step 1 of 4


class _Mean(Trainer):
    """Learns a scalar towards the batch mean; the EMA of the weight is easy to compute by hand."""

    def __init__(self):
        self.w = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(self.w.weight)

    def modules(self):
        return {"w": self.w}

    def train_step(self, batch, ctx: StepContext):
        loss = (self.w.weight.sum() - 1.0) ** 2
        ctx.update("main", loss)
        return {"loss": loss.item()}

    def evaluate(self, ctx):
        return {"w": self.w.weight.item()}


def test_ema_weights_are_evaluated_and_saved_as_best(tmp_path):
    cfg = TrainConfig(epochs=1, steps_per_epoch=3, optimizer="sgd", lr=0.25, momentum=0.0, weight_decay=0.0,
                      ema=0.5, monitor="val/w", schedule="constant")
    trainer, run = _Mean(), Run(tmp_path / "ema")
    fit(trainer, [0], cfg, run)
    # sgd on (w - 1)^2 with lr 0.25: w = 0.5, 0.75, 0.875; EMA(0.5) from 0: 0.25, 0.5, 0.6875
    assert trainer.w.weight.item() == pytest.approx(0.875)
    assert [r["val/w"] for r in _epoch_rows(run)] == pytest.approx([0.6875])
    fresh = _Mean()
    load_best(run, fresh)
    assert fresh.w.weight.item() == pytest.approx(0.6875)


def test_steps_per_epoch_reiterates_small_data(tmp_path):
    cfg = TrainConfig(epochs=2, steps_per_epoch=5, lr=0.1, monitor="val/w", log_every=1)
    run = Run(tmp_path / "s")
    fit(_Mean(), [0, 1], cfg, run)
    assert [r["step"] for r in run.read_metrics() if "step" in r] == list(range(1, 11))


def test_best_checkpoint_is_not_resumable_and_says_so(tmp_path):
    _, run, _ = _fit(tmp_path, "b", epochs=1)
    run.checkpoint("last").write_bytes(run.checkpoint("best").read_bytes())
    with pytest.raises(UsageError, match="is a best.pt.*not a resumable"):
        _fit(tmp_path, "b", epochs=2)
    save_checkpoint(run.checkpoint("last"), torch.ones(3))
    with pytest.raises(UsageError, match="is not a resumable checkpoint"):
        _fit(tmp_path, "b", epochs=2)


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


def test_validation_scores_every_image_after_an_uneven_last_batch(tmp_path):
    """An epoch ending on a short batch must not cut the validation set to that batch's size."""
    from syllabus.classify import predict

    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    val = DataLoader(_data(270, seed=1), batch_size=64)
    trainer = ClassifierTrainer(model, val, 3)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, monitor="val/accuracy")
    run = Run(tmp_path / "v")
    fit(trainer, DataLoader(_data(1257), batch_size=64, shuffle=True), cfg, run)
    out = predict(model, val)
    assert len(out["true"]) == 270
    assert _epoch_rows(run)[0]["val/accuracy"] == pytest.approx((out["true"] == out["pred"]).mean())


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(False, False, "no"), (True, False, "bf16"),
                                                        (False, True, "bf16")])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch, amx, avx512_bf16, expected):
    from syllabus.train import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("no", "cpu") == "no" and resolve_precision("bf16", "cpu") == "bf16"


def test_runs_in_one_process_each_take_their_own_precision():
    """Accelerate keeps one state per process: a bf16 run after an fp32 one (run-all does this)
    must neither fail nor inherit the first run's precision."""
    from syllabus.train import make_accelerator

    assert make_accelerator("cpu", "no").mixed_precision == "no"
    assert make_accelerator("cpu", "bf16").mixed_precision == "bf16"
    assert make_accelerator("cpu", "no").mixed_precision == "no"
