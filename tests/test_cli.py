"""The command line end to end: smoke runs, sweeps, resume, reports, and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from syllabus.cli import main


def _errors(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv,expected", [
    (["run", "nope"], "unknown experiment 'nope'; valid: "),
    (["run", "resnet-norms", "--profile", "huge"],
     "unknown profile 'huge' for resnet-norms; valid: smoke, demo, quick, full"),
    (["run", "resnet-norms", "--set", "model.nrm=bn"], "unknown key 'model.nrm'; valid keys: data.name"),
    (["run", "resnet-norms", "--set", "train.lr=fast"], "bad value 'fast' for train.lr: expected float"),
    (["run", "resnet-norms", "--set", "model.norm=xyz"], "choices: bn, in, bin, ln, gn, none"),
    (["run", "resnet-norms", "--sweep", "model.norm=bn,xyz"], "bad value 'xyz' for model.norm; choices"),
    (["run", "resnet-norms", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["run", "resnet-norms", "--profile", "full"], "data.root"),
    (["report", "/nonexistent/run"], "no such run directory"),
    (["run", "resnet-norms", "--set", "train.epochs=0"], "train.epochs: must be >= 1"),
    (["run", "resnet-norms", "--set", "train.epochs=-1"], "train.epochs: must be >= 1"),
    (["run", "resnet-norms", "--set", "train.batch_size=0"], "train.batch_size: must be >= 1"),
    (["run", "resnet-norms", "--set", "train.batch_size=-3"], "train.batch_size: must be >= 1"),
    (["run", "resnet-norms", "--set", "data.num_workers=-1"], "data.num_workers: must be >= 0"),
    (["run", "resnet-norms", "--set", "train.lr=-0.1"], "train.lr: must be > 0"),
    (["run", "resnet-norms", "--set", "train.lr=nan"], "train.lr: must be > 0"),
    (["run", "resnet-norms", "--set", "train.lr=inf"], "train.lr: must be > 0"),
    (["run", "resnet-norms", "--set", "model.n=0"], "model.n: must be >= 1"),
    (["run", "resnet-norms", "--sweep", "train.lr=0.1,-1"], "train.lr: must be > 0"),
    (["run", "resnet-norms", "--set", "train.monitor=bogus"], "train.monitor 'bogus' is not a metric"),
    (["run", "resnet-norms", "--set", "data.root=/tmp"], "data.root is for real datasets"),
    (["run", "resnet-norms", "--set", "train.lr=0.1", "--set", "train.lr=0.2"], "given twice"),
    (["run", "resnet-norms", "--threads", "0"], "--threads"),
    (["run", "resnet-norms", "--jobs", "2"], "--jobs sets how many experiments `run all` runs at once"),
    (["run", "all", "--jobs", "0"], "--jobs"),
    (["data", "prepare", "nope"], "valid"),
])
def test_bad_input_is_one_line_and_status_2(capsys, tmp_path, argv, expected):
    code, err = _errors(capsys, argv + (["--out", str(tmp_path)] if argv[0] == "run" else []))
    assert code == 2
    assert expected in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # validated before anything was written


def test_list_names_every_profile(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "resnet-norms" in out and "smoke|quick|full" in out


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--threads", "1", "list"], ["list", "--threads", "1"]])
def test_threads_is_taken_before_or_after_the_command_and_limits_blas_too(capsys, monkeypatch, argv):
    import scipy.linalg  # noqa: F401 - loads a BLAS whose pool must be limited too
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from syllabus.threads import POOL_VARIABLES

    for name in POOL_VARIABLES:
        monkeypatch.setenv(name, "2")  # restored after the test
    before, pools = torch.get_num_threads(), threadpool_info()
    try:
        torch.set_num_threads(2)
        assert main(argv) == 0
        assert torch.get_num_threads() == 1
        assert pools and all(pool["num_threads"] == 1 for pool in threadpool_info())
        assert all(os.environ[name] == "1" for name in POOL_VARIABLES)  # for libraries loaded later
    finally:
        torch.set_num_threads(before)
        threadpool_limits(limits=max(pool["num_threads"] for pool in pools))


def test_smoke_run_writes_the_run_directory(tmp_path, capsys):
    assert main(["run", "resnet-norms", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu"]) == 0
    (run_dir,) = (tmp_path / "resnet-norms").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    epochs = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "step" not in r]
    # the summary is the best checkpoint's: its val accuracy is the best epoch's logged one
    assert summary["val/accuracy"] == pytest.approx(max(r["val/accuracy"] for r in epochs))
    cm = np.asarray(summary["splits"]["test"]["confusion"])
    assert summary["test/accuracy"] == pytest.approx(np.trace(cm) / cm.sum()) and cm.sum() == 48
    assert summary["depth"] == 8 and [r["epoch"] for r in epochs] == [1, 2]
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<img src=\"plots" not in html
    assert "Headline" in html and "Training curves" in html and "config.json" in html
    config = json.loads((run_dir / "config.json").read_text())
    assert config["profile"] == "smoke" and config["config"]["model"]["norm"] == "bn"

    # a finished run resumed stays finished: no epoch is trained or logged again
    before = (run_dir / "metrics.jsonl").read_text()
    assert main(["run", "--resume", str(run_dir), "--device", "cpu"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert (run_dir / "metrics.jsonl").read_text() == before

    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0 and "Headline" in (run_dir / "report.html").read_text()


@pytest.mark.slow
def test_smoke_sweep_writes_comparison(tmp_path):
    argv = ["run", "resnet-norms", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu",
            "--sweep", "model.norm=bin,gn", "--set", "train.epochs=1"]
    assert main(argv) == 0
    dirs = sorted(p.name for p in (tmp_path / "resnet-norms").iterdir())
    assert len(dirs) == 3 and dirs[0].endswith("norm=bin") and dirs[2].endswith("sweep")
    sweep = tmp_path / "resnet-norms" / dirs[2]
    summary = json.loads((sweep / "summary.json").read_text())
    assert [p["run"] for p in summary["points"]] == ["norm=bin", "norm=gn"]
    point = json.loads((tmp_path / "resnet-norms" / dirs[0] / "summary.json").read_text())
    assert summary["points"][0]["test/accuracy"] == point["test/accuracy"]
    html = (sweep / "report.html").read_text()
    assert "rho" in html and html.count("data:image/png;base64,") >= 4 and "report of norm=gn" in html


def test_run_all_waits_for_an_upstream_of_this_run_and_hands_it_over(tmp_path):
    from syllabus.experiments import get_experiment
    from syllabus.run_jobs import hand_over, ready_to_start
    from syllabus.runner import plan

    p = plan(get_experiment("gradcam"), "smoke", {}, {})
    assert not ready_to_start(p, {"resnet-norms", "gradcam"}, {})  # its upstream is part of this run all
    assert ready_to_start(p, {"gradcam"}, {})  # not part of it: gradcam trains its own
    hand_over(p, {"resnet-norms": {"report": None, "error": "boom"}})  # failed upstream: nothing handed
    assert p.cfg.model.run == ""
    hand_over(p, {"resnet-norms": {"report": tmp_path / "sweep" / "report.html"}})
    assert p.cfg.model.run == str(tmp_path / "sweep") and ready_to_start(p, {"resnet-norms", "gradcam"}, {})


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "syllabus", "run", "resnet-norms", "--set", "x=1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1


@pytest.mark.slow
def test_smoke_run_on_a_birds_imagefolder(tmp_path, kaggle_birds):
    argv = ["run", "resnet-norms", "--profile", "smoke", "--out", str(tmp_path / "runs"), "--device", "cpu",
            "--set", f"data.root={kaggle_birds}", "--set", "data.name=birds", "--set", "data.image_size=32",
            "--set", "data.num_workers=0"]
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "runs" / "resnet-norms").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["classes"] == ["Cattle-Egret", "Indian-Peacock", "Ruddy-Shelduck"]
    assert summary["split_info"]["counts"]["test"] > 0  # carved from train, recorded in the run


def test_corrupt_birds_image_is_named(tmp_path, kaggle_birds, capsys):
    bad = kaggle_birds / "valid" / "Indian-Peacock" / "0.jpg"
    bad.write_bytes(b"not a jpeg")
    argv = ["run", "resnet-norms", "--profile", "smoke", "--out", str(tmp_path / "runs"), "--device", "cpu",
            "--set", f"data.root={kaggle_birds}", "--set", "data.name=birds", "--set", "data.image_size=32"]
    code, err = _errors(capsys, argv)
    assert code == 2 and "corrupt image" in err and str(bad) in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_run_all_smoke_writes_an_index_card_per_experiment(tmp_path, capsys):
    from syllabus.experiments import all_experiments

    n = len(all_experiments())
    assert main(["run", "all", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu", "--jobs", "2"]) == 0
    sweeps = [d for d in (tmp_path / "resnet-norms").iterdir() if d.name.endswith("-sweep")]
    gradcam = json.loads(next((tmp_path / "gradcam").glob("*/config.json")).read_text())
    assert len(sweeps) == 1 and gradcam["config"]["model"]["run"] == str(sweeps[0])  # reused, trained once
    html = (tmp_path / "index.html").read_text()
    assert html.count('<article class="card">') == n
    assert html.count("open the report") == n and "failed:" not in html
    assert "min of jobs side by side" in html  # wall time beside the jobs' sum
    out = capsys.readouterr().out
    assert f"[{n}/{n}]" in out and "min to go" in out
    sweep = json.loads((sweeps[0] / "sweep.json").read_text())  # its points ran as jobs of their own
    labels = [e["label"] for e in sweep["points"]]
    assert len(labels) == 6 and all(e["status"] == "ok" for e in sweep["points"])
    assert sorted(f.name for f in (tmp_path / "logs").glob("resnet-norms.*.log")) == sorted(
        f"resnet-norms.{label}.log" for label in labels)


def test_run_all_splits_sweeps_into_point_jobs_and_records_each_point(tmp_path):
    from syllabus.experiments import get_experiment
    from syllabus.run_jobs import _finish, _point_ended, _split
    from syllabus.runner import plan

    exp, vae = get_experiment("resnet-norms"), get_experiment("vae")
    sweeps = {}
    jobs = _split(plan(exp, "smoke", {}, {"model.norm": "bn,gn,none"}), tmp_path, "cpu", "s", tmp_path, sweeps)
    assert [j.point["label"] for j in jobs] == ["norm=bn", "norm=gn", "norm=none"]
    assert all(j.seconds == exp.budget_s / 3 for j in jobs) and jobs[1].log.name == "resnet-norms.norm=gn.log"
    single = _split(plan(vae, "smoke", {}, {}), tmp_path, "cpu", "s", tmp_path, sweeps)
    assert len(single) == 1 and single[0].point is None and single[0].seconds == vae.budget_s
    sweep = sweeps["resnet-norms"]
    outcomes = [{"status": "failed", "error": "diverged at step 3", "seconds": 2.0}, {"report": None, "error": "boom"},
                {"status": "failed", "error": "diverged at step 5", "seconds": 1.0}]
    assert [_point_ended(sweep, j, o) for j, o in zip(jobs, outcomes)] == [False, False, True]
    saved = json.loads((sweep.dir / "sweep.json").read_text())
    assert [e["status"] for e in saved["points"]] == ["failed"] * 3 and saved["points"][1]["error"] == "boom"
    entry = _finish(sweep)
    assert entry["report"] is None and entry["seconds"] == 3.0
    assert "no finished points" in entry["error"] and "norm=gn: boom" in entry["error"]


def test_every_profile_of_every_experiment_builds_its_config():
    from syllabus.config import leaves
    from syllabus.experiments import all_experiments

    for exp in all_experiments():
        assert {"smoke", "quick", "full"} <= set(exp.profiles) <= {"smoke", "demo", "quick", "full"}, exp.name
        for profile in exp.profiles:
            assert leaves(exp.config(profile)), (exp.name, profile)  # a factory error fails here, not on a GPU


def test_small_blas_calls_use_the_threads_asked_for_else_one(monkeypatch):
    import scipy.linalg  # noqa: F401 - loads a BLAS
    from threadpoolctl import threadpool_info

    from syllabus import threads

    blas = lambda: {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    for asked, expected in ((None, {1}), (3, {3})):
        monkeypatch.setattr(threads, "_asked", asked)
        with threads.small_blas():
            assert blas() == expected


def test_progress_line_counts_the_ended_sweep_points_when_jobs_run_side_by_side():
    from syllabus.experiments import get_experiment
    from syllabus.run_all import _progress_line
    from syllabus.runner import plan

    vae, norms = get_experiment("vae"), get_experiment("resnet-norms")
    plans = [plan(vae, "smoke", {}, {}), plan(norms, "smoke", {}, {})]
    entries = {"vae": {"report": "r", "error": "", "seconds": 30.0}}
    spent = vae.budget_s + norms.budget_s / 2  # half the sweep's points have ended too
    line = _progress_line(plans, entries, "vae", 60 * (vae.budget_s + norms.budget_s / 2) / 100, spent)
    assert line.startswith("[1/2] vae 30 s (ok)")
    assert f"about {norms.budget_s / 2 * 0.6 / 60:.0f} min to go" in line  # 0.6 s of wall per second of budget
    sequential = _progress_line(plans, entries, "vae", 60.0)
    assert f"about {norms.budget_s * 60 / vae.budget_s / 60:.0f} min to go" in sequential


def test_demo_profile_is_the_quick_one_unless_an_experiment_has_a_lighter_one():
    from dataclasses import asdict

    from syllabus.errors import UsageError
    from syllabus.experiments import get_experiment

    vae, math = get_experiment("vae"), get_experiment("math-programs")
    assert asdict(vae.config("demo")) == asdict(vae.config("quick"))
    assert math.config("demo").train.epochs < math.config("quick").train.epochs
    with pytest.raises(UsageError, match="valid: smoke, demo, quick, full"):
        vae.config("fast")


def test_a_run_imports_only_its_own_experiment():
    code = ("import sys; from syllabus.experiments import get_experiment; get_experiment('vae'); "
            "print(sorted(m for m in sys.modules if m.startswith('syllabus.experiments.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "syllabus.experiments.vae" in out and "math_programs" not in out and "slot_attention" not in out
