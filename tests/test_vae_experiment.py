"""The `vae` experiment: its trainer through the loop core, the labels of its bounds, CLI runs, bad input."""

import json
import re

import numpy as np
import pytest
import torch

from syllabus.cli import main
from syllabus.data.digits import digits_splits
from syllabus.experiments.vae import DataConfig, is_binary, latent_map, load_splits
from syllabus.experiments.vae_report import iwae_meaning


def _epochs(run_dir):
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r for r in rows if "step" not in r]


def _section_has_image(html: str, heading: str) -> bool:
    """The section `heading` holds an embedded PNG before the next section starts."""
    match = re.search(rf"<h2[^>]*>{re.escape(heading)}</h2>(.*?)(<h2|$)", html, re.S)
    return match is not None and "data:image/png;base64," in match.group(1)


def test_binarised_digits_are_binary_and_grey_ones_are_not():
    grey = load_splits(DataConfig())
    binary = load_splits(DataConfig(binarize=True))
    assert not is_binary(grey["test"].images) and is_binary(binary["test"].images)
    assert 0.2 < binary["train"].images.mean() < 0.5  # one Bernoulli draw of each pixel's grey level


def test_the_iwae_bound_is_called_a_log_likelihood_only_on_binary_pixels():
    assert "estimates the test log-likelihood" in iwae_meaning(True)
    grey = iwae_meaning(False)
    assert "not a normalised" in grey and "nor the IWAE bound is a log-likelihood" in grey
    assert "data.binarize=true" in grey


@pytest.mark.slow
def test_smoke_run_trains_measures_reports_resumes_exactly_and_compares(exact_resume, tmp_path):
    run_dir, cut = exact_resume("vae")
    epochs = _epochs(run_dir)
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[1]["val/elbo"] > epochs[0]["val/elbo"]  # training raises the bound
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["binary_pixels"] is False and s["best_epoch"] == 2
    by_k = s["iwae_by_k"]
    assert list(by_k) == ["1", "10", "16"] and s["test/iwae"] == by_k["16"]
    assert by_k["1"] < by_k["10"] < by_k["16"]  # more importance samples, a tighter bound
    # the ELBO (closed-form KL) and the k = 1 importance weight (sampled log p(x,z) - log q(z|x)) are two
    # independent unbiased estimates of the same bound
    assert by_k["1"] == pytest.approx(s["test/elbo"], abs=0.3)
    assert s["iwae_gap"] == pytest.approx(s["test/iwae"] - s["test/elbo"]) and s["iwae_gap"] > 0
    assert len(s["kl_per_dim"]) == 2 and sum(s["kl_per_dim"]) == pytest.approx(s["test/kl"], rel=1e-4)
    test = digits_splits(size=8, seed=0)["test"]
    with np.load(run_dir / "pictures.npz") as pics:
        np.testing.assert_array_equal(pics["inputs"], test.images[:8, 0].numpy())
        first = [int((test.targets == d).nonzero()[0]) for d in (0, 1, 5, 6)]
        np.testing.assert_array_equal(pics["interp"][:, 0], test.images[first[:2], 0].numpy())  # ends: real images
        np.testing.assert_array_equal(pics["interp"][:, -1], test.images[first[2:], 0].numpy())
        assert pics["manifold"].shape == (5, 5, 8, 8) and pics["latent"].shape == (270, 2)
        np.testing.assert_array_equal(pics["labels"], test.targets.numpy())
    html = (run_dir / "report.html").read_text()
    for heading in ("Reconstructions", "Samples from the prior", "Interpolations in latent space",
                    "Latent map of the test set", "Decoded manifold of the 2-D latent", "Training curves"):
        assert _section_has_image(html, heading), heading
    assert "test log-likelihood" not in html and "not a normalised" in html  # grey digits: no likelihood claimed

    sweep = sweep_of(tmp_path, {"whole": run_dir, "resumed": cut})
    assert main(["report", str(sweep)]) == 0
    summary = json.loads((sweep / "summary.json").read_text())
    assert [p["run"] for p in summary["points"]] == ["whole", "resumed"] and summary["best"] == "whole"
    assert summary["test/iwae"] == s["test/iwae"]
    html = (sweep / "report.html").read_text()
    assert _section_has_image(html, "Samples and latent maps of each run") and "Bernoulli score" in html


def sweep_of(tmp_path, runs: dict):
    """A sweep directory over existing run directories (label -> dir), as `run_sweep` writes it."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    exp = json.loads((next(iter(runs.values())) / "config.json").read_text())["experiment"]
    points = [{"label": k, "overrides": {}, "dir": str(d), "status": "ok"} for k, d in runs.items()]
    (sweep / "sweep.json").write_text(json.dumps({"experiment": exp, "profile": "smoke", "points": points}))
    return sweep


def test_latent_map_is_the_means_in_2d_and_their_pca_above():
    torch.manual_seed(0)
    mu = torch.randn(50, 2)
    coords, how = latent_map(mu)
    np.testing.assert_array_equal(coords, mu.numpy())
    assert how == "latent means (z1, z2)"
    mu3 = torch.randn(50, 3) * torch.tensor([5.0, 1.0, 0.1])
    coords, how = latent_map(mu3)
    assert coords.shape == (50, 2) and how == "PCA of the 3-D latent means (100% of their variance)"
    assert abs(np.corrcoef(coords[:, 0], mu3[:, 0].numpy())[0, 1]) > 0.99  # first component: the widest axis


@pytest.mark.parametrize("sets,expected", [
    (["data.name=mnist", "data.root=/nonexistent/mnist"],
     "MNIST not found under /nonexistent/mnist; run `syllabus data prepare mnist --download`"),
    (["model.arch=conv", "data.size=10"], "data.size=10 must be a multiple of 4"),
    (["model.arch=gan"], "bad value 'gan' for model.arch; choices: mlp, conv"),
    (["eval.iwae_k=0"], "bad value 0 for eval.iwae_k: must be >= 1"),
    (["model.latent_dim=-2"], "bad value -2 for model.latent_dim: must be >= 1"),
    (["model.hidden=64,0"], "bad value 0 for model.hidden: must be >= 1"),
    (["train.monitor=val/accuracy"], "train.monitor 'val/accuracy' is not a metric of vae"),
])
def test_bad_settings_fail_before_training(capsys, tmp_path, sets, expected):
    argv = ["run", "vae", "--profile", "smoke", "--out", str(tmp_path)]
    code = main(argv + [a for s in sets for a in ("--set", s)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())
