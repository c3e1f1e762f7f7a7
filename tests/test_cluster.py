"""Sweeps through submitit (its LocalExecutor runs the SLURM path without SLURM), and TensorBoard logs."""

import json
import time

import pytest
import torch

from syllabus.cli import main

TINY = ["--profile", "smoke", "--device", "cpu", "--set", "data.n_train=32", "--set", "data.n_val=16",
        "--set", "data.n_test=16", "--set", "train.epochs=2", "--sweep", "model.norm=bn,gn"]


def _summaries(out):
    return {p.name.split("-", 2)[-1]: {k: v for k, v in json.loads((p / "summary.json").read_text()).items()
                                       if "time" not in k}
            for p in sorted((out / "resnet-norms").glob("*-norm=*"))}


def _wait_for_jobs(sweep_dir, n, timeout=600):
    deadline = time.time() + timeout
    while len(list((sweep_dir / "jobs").glob("*_result.pkl"))) < n:
        assert time.time() < deadline, "submitit jobs did not finish"
        time.sleep(1)


@pytest.mark.slow
def test_submitit_sweep_matches_the_local_one_and_resumes_a_killed_point(tmp_path, capsys):
    assert main(["run", "resnet-norms", *TINY, "--out", str(tmp_path / "local")]) == 0
    assert main(["run", "resnet-norms", *TINY, "--out", str(tmp_path / "jobs"), "--launcher", "submitit-local",
                 "--set", "log.tensorboard=true"]) == 0
    (sweep,) = (tmp_path / "jobs" / "resnet-norms").glob("*-sweep")
    _wait_for_jobs(sweep, 2)
    assert main(["report", str(sweep)]) == 0
    assert _summaries(tmp_path / "jobs") == _summaries(tmp_path / "local")
    info = json.loads((sweep / "sweep.json").read_text())
    assert [e["status"] for e in info["points"]] == ["ok", "ok"] and all(e["job_id"] for e in info["points"])

    # the gn point killed after its first epoch: no summary, last.pt of epoch 1
    gn = next(p for p in (tmp_path / "jobs" / "resnet-norms").glob("*-norm=gn"))
    (gn / "summary.json").unlink()
    (gn / "report.html").unlink()
    state = torch.load(gn / "checkpoints" / "last.pt", weights_only=True)
    state["progress"].update(epoch=1, finished=False)
    torch.save(state, gn / "checkpoints" / "last.pt")
    assert main(["report", str(sweep)]) == 0
    assert "Points not finished" in (sweep / "report.html").read_text()
    capsys.readouterr()
    assert main(["run", "--resume", str(sweep), "--launcher", "submitit-local"]) == 0
    assert "1 point(s) finished, 1 to run" in capsys.readouterr().out
    _wait_for_jobs(sweep, 3)
    assert "resuming after epoch 1" in "".join(p.read_text() for p in (sweep / "jobs").glob("*_log.out"))
    epochs = [r["epoch"] for r in map(json.loads, (gn / "metrics.jsonl").read_text().splitlines()) if "step" not in r]
    assert epochs == [1, 2] and (gn / "summary.json").exists()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(gn.parent.glob("*-norm=bn")) / "tensorboard")).Reload()
    logged = [r for r in map(json.loads, (next(gn.parent.glob("*-norm=bn")) / "metrics.jsonl").read_text()
                             .splitlines()) if "step" not in r]
    scalars = events.Scalars("val/accuracy (per epoch)")
    assert [s.step for s in scalars] == [1, 2]
    assert [s.value for s in scalars] == pytest.approx([r["val/accuracy"] for r in logged])


@pytest.mark.parametrize("argv,expected", [
    (["--sweep", "model.norm=bn,gn", "--launcher", "slurm"], "sbatch is not on PATH"),
    (["--sweep", "model.norm=bn,gn", "--launcher", "pbs"], "--launcher pbs: valid: local, submitit-local, slurm"),
    (["--sweep", "model.norm=bn", "--launcher", "submitit-local", "--set", "launcher.partion=gpu"],
     "unknown key 'launcher.partion'"),
    (["--launcher", "submitit-local"], "submits the points of a --sweep"),
    (["--set", "log.tensorbord=true"], "unknown key 'log.tensorbord'"),
])
def test_bad_launcher_settings_are_one_line_before_anything_is_submitted(tmp_path, capsys, argv, expected):
    assert main(["run", "resnet-norms", "--profile", "smoke", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
