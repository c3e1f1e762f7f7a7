"""The `vae` experiment from the command line: a smoke run, a sweep, and bad input."""

import json

import numpy as np
import pytest

from syllabus.cli import main


def _epochs(run_dir):
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r for r in rows if "step" not in r]


def test_smoke_run_trains_measures_and_reports(tmp_path):
    assert main(["run", "vae", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu"]) == 0
    (run_dir,) = (tmp_path / "vae").iterdir()
    for name in ("summary.json", "report.html", "pictures.npz", "checkpoints/best.pt", "plots/curves.png",
                 "plots/manifold.png", "plots/latent_map.png", "plots/interpolations.png", "plots/samples.png"):
        assert (run_dir / name).exists(), name
    epochs = _epochs(run_dir)
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[1]["val/elbo"] > epochs[0]["val/elbo"]  # training raises the bound
    s = json.loads((run_dir / "summary.json").read_text())
    for split in ("train", "val", "test"):
        assert s[f"{split}/elbo"] == pytest.approx(-(s[f"{split}/recon"] + s[f"{split}/kl"]))
    by_k = s["iwae_by_k"]
    assert list(by_k) == ["1", "10", "16"] and s["test/iwae"] == by_k["16"]
    assert by_k["1"] < by_k["10"] < by_k["16"]  # more importance samples, a tighter bound
    assert len(s["kl_per_dim"]) == 2 and s["latent_map"].startswith("latent means")
    with np.load(run_dir / "pictures.npz") as pics:
        assert pics["manifold"].shape == (5, 5, 8, 8) and pics["interp"].shape == (2, 6, 8, 8)
        assert pics["latent"].shape == (270, 2) and pics["samples"].shape == (8, 8, 8)
        assert 0 <= pics["recons"].min() and pics["recons"].max() <= 1
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8 and "IWAE" in html
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0 and (run_dir / "report.html").exists()


def test_sweep_over_arch_compares_runs(tmp_path):
    argv = ["run", "vae", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu",
            "--sweep", "model.arch=mlp,conv", "--set", "model.latent_dim=3", "--set", "train.epochs=1"]
    assert main(argv) == 0
    sweep = next(p for p in (tmp_path / "vae").iterdir() if p.name.endswith("sweep"))
    summary = json.loads((sweep / "summary.json").read_text())
    assert [p["run"] for p in summary["points"]] == ["arch=mlp", "arch=conv"]
    assert summary["best"] in ("arch=mlp", "arch=conv") and "test/iwae" in summary
    point = json.loads((tmp_path / "vae" / f"{sweep.name.removesuffix('sweep')}arch=conv" / "summary.json")
                       .read_text())
    assert point["arch"] == "conv" and point["latent_map"].startswith("PCA of the 3-D")
    assert (sweep / "report.html").read_text().count("data:image/png;base64,") >= 6


@pytest.mark.parametrize("sets,expected", [
    (["data.name=mnist", "data.root=/nonexistent/mnist"],
     "MNIST not found under /nonexistent/mnist; run `syllabus data prepare mnist --download`"),
    (["model.arch=conv", "data.size=10"], "data.size=10 must be a multiple of 4"),
    (["model.arch=gan"], "bad value 'gan' for model.arch; choices: mlp, conv"),
    (["eval.iwae_k=0"], "eval.iwae_k=0: must be at least 1"),
])
def test_bad_settings_fail_before_training(capsys, tmp_path, sets, expected):
    argv = ["run", "vae", "--profile", "smoke", "--out", str(tmp_path)]
    code = main(argv + [a for s in sets for a in ("--set", s)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())
