"""The `math-programs` experiment: smoke run, exact resume, predict + score reproduce the run, bad input."""

import json

import pytest

from syllabus.cli import main
from syllabus.experiments import get_experiment
from syllabus.metrics.sequence import METRICS


@pytest.mark.slow
def test_smoke_run_trains_scores_reports_resumes_and_predicts_its_own_numbers(exact_resume, tmp_path, capsys):
    run_dir, _ = exact_resume("math-programs", ["train.epochs=2", "data.n_train=64", "data.n_test=24",
                                                "model.beam_study=1,3"])
    s = json.loads((run_dir / "summary.json").read_text())
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if "step" not in r]
    assert epochs[1]["train/loss"] < epochs[0]["train/loss"]  # it learns
    assert s["scores"]["test"]["n"] == 24 and s["scores"]["val"]["n"] == 32
    assert set(s["scores"]) == {"val", "val/grammar", "test", "test/grammar"}
    assert s["glove_covered"] > 0.9 * (s["n_words"] - 2)  # real GloVe vectors for the problems' words
    html = (run_dir / "report.html").read_text()
    assert "Accuracy by program length" in html and "Published numbers" in html and "Beam size study" in html
    assert set(s["beam_study"]) == {"1", "3"} and s["beam_study"]["3"]["test"] == s["scores"]["test"]  # the headline
    # predict + score on the run's own test file reproduce its test numbers exactly
    test_in, out = _own_test_file(run_dir, tmp_path), tmp_path / "pred.json"
    assert main(["predict", str(run_dir), "--input", str(test_in), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["score", str(out), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    for m in (*METRICS, "invalid"):
        assert scored[m] == s[f"test/{m}"], m
    assert scored["by_length"] == s["scores"]["test"]["by_length"]
    assert main(["predict", str(run_dir), "--input", str(test_in), "--out", str(out), "--beam", "1"]) == 0
    capsys.readouterr()
    assert main(["score", str(out), "--json"]) == 0  # the study's greedy row is what greedy decoding scores
    greedy = json.loads(capsys.readouterr().out)
    assert all(greedy[m] == s["beam_study"]["1"]["test"][m] for m in (*METRICS, "invalid"))


def _own_test_file(run_dir, tmp_path):
    """The run's test problems as an input file for `syllabus predict` (its predictions removed)."""
    test_in = tmp_path / "test_in.json"
    test_in.write_text(json.dumps([{k: v for k, v in r.items() if k != "predicted"}
                                   for r in json.loads((run_dir / "predictions_test.json").read_text())]))
    return test_in


@pytest.mark.slow
def test_gradual_unfreezing_resumes_exactly_and_trains_only_the_top_layer_after_its_frozen_epochs(
        exact_resume, tmp_path, capsys):
    import torch

    from syllabus.programs.training import load_bert

    sets = ["model.bert_train_layers=1", "model.bert_frozen_epochs=1", "train.epochs=2", "data.n_train=64",
            "data.n_test=80"]  # two batches of cached BERT states
    run_dir, _ = exact_resume("math-programs", ["model.arch=bert-finetune", *sets])
    args = ["run", "math-programs", "--profile", "smoke", "--out", str(tmp_path / "frozen")]
    assert main([*args, *[a for s in ["model.arch=bert-frozen", *sets] for a in ("--set", s)]]) == 0
    frozen_dir = next((tmp_path / "frozen" / "math-programs").iterdir())
    first = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()
              if '"step"' not in line][0] for d in (run_dir, frozen_dir)]
    assert first[0]["train/loss"] == pytest.approx(first[1]["train/loss"], rel=1e-4)  # epoch 1: the frozen model's
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["modules"]["model"]
    pretrained = load_bert("minilm")[0].state_dict()
    changed = {k.split(".")[4] for k, v in last.items() if k.startswith("encoder.bert.encoder.layer.")
               and not torch.equal(v, pretrained[k.removeprefix("encoder.bert.")])}
    assert changed == {"5"}  # the top layer alone, trained in epoch 2
    # predict caches the BERT's frozen layers as the run did, so it writes the run's own predictions
    out = tmp_path / "pred.json"
    assert main(["predict", str(run_dir), "--input", str(_own_test_file(run_dir, tmp_path)), "--out", str(out)]) == 0
    ours = [r["predicted"] for r in json.loads((run_dir / "predictions_test.json").read_text())]
    assert [r["predicted"] for r in json.loads(out.read_text())] == ours


def test_profiles_train_the_glove_attention_model_and_sweeps_name_the_four():
    exp = get_experiment("math-programs")
    quick = exp.config("quick")
    assert quick.model.arch == "glove-attn" and quick.model.glove == "kumo-50d" and quick.model.beam == 10
    full = exp.config("full")
    assert full.model.bert == "bert-base-cased" and full.train.teacher_forcing == 0.6
    from syllabus.config import sweep_points

    points = sweep_points(quick, {"model.arch": "glove,glove-attn,bert-frozen,bert-finetune"})
    assert len(points) == 4


@pytest.mark.parametrize("sets, message", [
    (["model.glove=/no/glove.6B.100d.txt"], "model.glove"),
    (["data.root=/no/such/folder"], "data.root=/no/such/folder: no such folder"),
    (["model.arch=lstm"], "choices"),
    (["train.teacher_forcing=1.5"], "train.teacher_forcing"),
    (["model.arch=bert-finetune", "model.bert_frozen_epochs=1"], "model.bert_frozen_epochs needs"),
])
def test_bad_settings_are_one_line_before_training(tmp_path, capsys, sets, message):
    args = ["run", "math-programs", "--profile", "smoke", "--out", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_predict_needs_a_run_and_problems(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--input", str(tmp_path / "x.json")]) == 2
    assert "not a run directory (a math-programs run)" in capsys.readouterr().err
    other = tmp_path / "vae-run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"experiment": "vae", "profile": "smoke", "config": {}}))
    assert main(["predict", str(other), "--input", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "is a 'vae' run, not a math-programs run" in err and err.count("\n") == 1
