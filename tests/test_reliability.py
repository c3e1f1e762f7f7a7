"""Bad input a new user tries, each one line and exit 2 (or a named failure), and what must hold."""

import json

import pytest
import torch

from syllabus.cli import main
from syllabus.runs import Run, new_run_dir, save_checkpoint

TINY = ["--set", "data.n_train=32", "--set", "data.n_val=16", "--set", "data.n_test=16",
        "--set", "train.epochs=1", "--device", "cpu"]


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) <= 1 and "Traceback" not in err, err
    return code, err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny resnet-norms run (copied per test where it is damaged)."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "resnet-norms", "--profile", "smoke", "--out", str(out), *TINY]) == 0
    (run_dir,) = (out / "resnet-norms").iterdir()
    return run_dir


def _copy(run_dir, tmp_path):
    import shutil

    return shutil.copytree(run_dir, tmp_path / run_dir.name)


def test_out_is_a_file_or_unwritable(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert _err(capsys, ["run", "resnet-norms", "--profile", "smoke", "--out", str(f)]) == \
        (2, f"syllabus: error: --out {f} is a file, not a directory")
    code, err = _err(capsys, ["run", "resnet-norms", "--profile", "smoke", "--out", str(f / "sub")])
    assert code == 2 and "not a writable directory" in err


def test_sweep_labels_stay_inside_out(tmp_path):
    out = tmp_path / "out"
    path = new_run_dir(out, "exp", "stamp", "run=.._.._..")
    assert path.resolve().is_relative_to(out.resolve())
    from syllabus.config import point_label

    assert "/" not in point_label({"model.run": "../../.."}) and not point_label({"a": "/x"}).startswith(".")


def test_two_run_dirs_in_the_same_second_differ(tmp_path):
    a, b = new_run_dir(tmp_path, "exp", "s"), new_run_dir(tmp_path, "exp", "s")
    assert a != b and a.is_dir() and b.is_dir()


def test_repeated_sweep_keys_merge():
    from syllabus.config import parse_assignments

    assert parse_assignments(["model.norm=bn", "model.norm=gn,bn"], "--sweep") == {"model.norm": "bn,gn"}


def test_resume_refuses_changes_the_checkpoint_would_override(finished, tmp_path, capsys):
    run_dir = _copy(finished, tmp_path)
    before = (run_dir / "config.json").read_text()
    code, err = _err(capsys, ["run", "--resume", str(run_dir), "--set", "train.lr=0.5"])
    assert code == 2 and "train.lr cannot change" in err
    assert (run_dir / "config.json").read_text() == before


def test_failed_resume_leaves_the_config_as_it_was(finished, tmp_path, capsys):
    run_dir = _copy(finished, tmp_path)
    before = (run_dir / "config.json").read_text()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"torn")
    code, err = _err(capsys, ["run", "--resume", str(run_dir), "--set", "train.log_every=5"])
    assert code == 2 and "corrupt checkpoint" in err and "last.pt" in err
    assert (run_dir / "config.json").read_text() == before


@pytest.mark.parametrize("damage,expected", [
    (lambda d: (d / "checkpoints/best.pt").replace(d / "checkpoints/last.pt"), "is a best.pt, not a resumable"),
    (lambda d: save_checkpoint(d / "checkpoints/last.pt", torch.ones(3)), "not a resumable checkpoint"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "is not a run configuration"),
    (lambda d: (d / "config.json").write_text('{"profile": "smoke", "config": {}}'), "does not say which experiment"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "experiment": "gradcam"})), "not a configuration of gradcam"),
])
def test_damaged_run_directories_are_one_line(finished, tmp_path, capsys, damage, expected):
    run_dir = _copy(finished, tmp_path)
    damage(run_dir)
    code, err = _err(capsys, ["run", "--resume", str(run_dir)])
    assert code == 2 and expected in err


def test_run_without_checkpoints_says_so_and_starts_the_log_afresh(finished, tmp_path, capsys):
    run_dir = _copy(finished, tmp_path)
    for p in (run_dir / "checkpoints").iterdir():
        p.unlink()
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "stale": true}\n')
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert "has no checkpoint yet" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "step" not in r] == [1] and not any(r.get("stale") for r in rows)


def test_a_run_in_use_is_refused(finished, tmp_path, capsys):
    run_dir = _copy(finished, tmp_path)
    holder = Run(run_dir).lock()
    try:
        code, err = _err(capsys, ["run", "--resume", str(run_dir)])
    finally:
        holder.unlock()
    assert code == 2 and "in use by another syllabus process" in err


def test_ctrl_c_names_the_run_to_resume(tmp_path, capsys, monkeypatch):
    from syllabus.train import core

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "_end_epoch", interrupt)
    assert main(["run", "resnet-norms", "--profile", "smoke", "--out", str(tmp_path), *TINY]) == 130
    (run_dir,) = (tmp_path / "resnet-norms").iterdir()
    assert f"syllabus run --resume {run_dir}" in capsys.readouterr().err


def test_prepare_into_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    code, err = _err(capsys, ["data", "prepare", "shapes", "--set", f"data.dir={f}"])
    assert code == 2 and str(f) in err
