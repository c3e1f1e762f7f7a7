"""resnet-transfer end to end: the smoke CLI run, exact resume, and the full profile's path on stand-ins."""

import json

import numpy as np
import pytest
import torch
from torchvision.datasets import FakeData
from torchvision.models import resnet152

from syllabus.cli import main
from syllabus.data import transfer
from syllabus.experiments import load_trained
from syllabus.experiments.resnet_transfer_study import accuracy, loader


def _only_run(out):
    runs = [p for p in out.glob("resnet-transfer/*") if (p / "summary.json").exists()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_smoke_run_reports_every_part(tmp_path):
    assert main(["run", "resnet-transfer", "--profile", "smoke", "--device", "cpu", "--out", str(tmp_path)]) == 0
    run_dir = _only_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    analysis = json.loads((run_dir / "analysis.json").read_text())
    # the baseline's reported test accuracy is what its best checkpoint scores
    model, cfg, _ = load_trained(run_dir)
    source, target, _ = transfer.transfer_tasks(cfg.data)
    assert accuracy(model, loader(source.eval_splits["test"])) == pytest.approx(summary["test/accuracy"])
    assert set(summary["ablation"]) == {"intact", "all"}
    assert summary["ablation_gap"] == pytest.approx(summary["ablation"]["intact"]["test_accuracy"]
                                                    - summary["ablation"]["all"]["test_accuracy"])
    assert [r["skips cut"] for r in summary["inference_cuts"]] == ["none", "stage1", "stage2", "stage3", "all"]
    assert summary["hierarchy"]["levels"] == ["stem", "stage1", "stage2", "stage3"]
    assert summary["hierarchy"]["dims"] == [4, 4, 8, 8]
    # one gradient record per update (grad_every=1): 2 epochs of ceil(60 / 16) steps, 8 main-path layers
    grads = np.asarray(analysis["grad_norms"]["all"]["norms"])
    assert grads.shape == (2 * 4, 8) and (grads > 0).all()
    assert {len(p) for p in analysis["tsne"]["points"].values()} == {24}
    rows = {(r["strategy"], r["labels_per_class"]): r for r in summary["transfer"]}
    assert set(rows) == {(s, b) for s in ("probe", "last", "all", "scratch") for b in ("1", "all")}
    present = len(set(target.splits["train"].targets))
    assert rows["probe", "1"]["train_examples"] == present and rows["probe", "all"]["train_examples"] == 60
    assert summary["transfer/all"] == rows["all", "all"]["test_accuracy"]
    assert (run_dir / "parts" / "transfer-scratch-all" / "checkpoints" / "best.pt").exists()
    html = (run_dir / "report.html").read_text()
    for heading in ("Residual ablation", "skips cut at inference", "Feature hierarchy", "Transfer to the target"):
        assert heading in html
    assert all((run_dir / "plots" / f"{n}.png").stat().st_size > 1000 for n in ("tsne", "cka", "transfer_labels"))


@pytest.mark.slow
def test_resume_is_exact(exact_resume):
    exact_resume("resnet-transfer", ["train.epochs=2", "study.labels=0", "study.strategies=probe,all"])


def _fake(num_classes):
    def make(root, train, transform, download):
        return FakeData(12 if train else 4, (3, 32, 32), num_classes, transform, random_offset=0 if train else 50)

    return make


@pytest.mark.slow
def test_full_profile_path_with_random_resnet152_weights_on_fake_cifar(tmp_path, monkeypatch):
    monkeypatch.setitem(transfer.CIFAR_SETS, "cifar10", (_fake(10), "CIFAR-10", 10))
    monkeypatch.setitem(transfer.CIFAR_SETS, "cifar100", (_fake(100), "CIFAR-100", 100))
    # random ResNet-152 weights, the batch-norm statistics set from one batch of images like FakeData's (uniform
    # noise, ImageNet-normalised), so that eval mode stays finite
    torch.manual_seed(0)
    model = resnet152()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()((torch.rand(32, 3, 32, 32) - 0.45) / 0.226)
    torch.save(model.state_dict(), tmp_path / "resnet152-random.pth")
    sets = [f"model.weights={tmp_path / 'resnet152-random.pth'}", "data.image_size=32", "data.num_workers=0",
            "data.val_size=4",
            "train.epochs=1", "train.max_steps=1", "train.batch_size=4", "train.precision=no", "train.lr=1e-6",
            "tune.epochs=1", "tune.max_steps=1", "tune.batch_size=4", "tune.precision=no", "tune.lr=1e-6",
            "study.min_steps=0",
            "study.ablation=", "study.labels=0", "study.strategies=probe",
            "study.probe_examples=10", "study.tsne_points=10", f"data.root={tmp_path}"]
    args = ["run", "resnet-transfer", "--profile", "full", "--device", "cpu", "--out", str(tmp_path / "runs")]
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    summary = json.loads((_only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["params"] > 58_000_000  # ResNet-152 with a 10-way head
    assert summary["hierarchy"]["levels"] == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert summary["hierarchy"]["dims"] == [64, 256, 512, 1024, 2048]
    assert len(summary["target_classes"]) == 100 and [r["strategy"] for r in summary["transfer"]] == ["probe"]


def test_full_profile_without_data_or_weights_names_what_to_get(tmp_path, capsys, monkeypatch):
    args = ["run", "resnet-transfer", "--profile", "full", "--set", f"data.root={tmp_path}",
            "--out", str(tmp_path / "runs")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10 not found" in err and "data.download=true" in err
    monkeypatch.setitem(transfer.CIFAR_SETS, "cifar10", (_fake(10), "CIFAR-10", 10))
    monkeypatch.setitem(transfer.CIFAR_SETS, "cifar100", (_fake(100), "CIFAR-100", 100))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "resnet152 IMAGENET1K_V2 weights are not in" in err and "data.download=true" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))
