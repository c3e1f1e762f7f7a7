"""One run on two processes (torchrun, gloo on the CPU) through the loop core's Accelerate."""

import os
import subprocess
import sys

import pytest
import torch

ARGS = ["run", "resnet-norms", "--profile", "smoke", "--device", "cpu", "--set", "train.epochs=1",
        "--set", "model.norm=gn", "--set", "data.n_train=16", "--set", "train.max_steps=1",
        "--set", "train.optimizer=sgd", "--set", "train.lr=0.5"]


def _weights(out):
    (run_dir,) = (out / "resnet-norms").iterdir()  # exactly one run directory
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return state["modules"]["model"]


@pytest.mark.slow
def test_two_processes_average_gradients_like_one_process_with_twice_the_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "syllabus", *ARGS, "--set", "train.batch_size=8", "--out", str(tmp_path / "two")]
    one = [sys.executable, "-m", "syllabus", *ARGS, "--set", "train.batch_size=16", "--out", str(tmp_path / "one")]
    for cmd in (two, one):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("report:") == 1
    a, b = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    moved = 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
        moved += int(not torch.equal(a[k], torch.zeros_like(a[k])))
    assert moved > 10  # real weights were compared, after one real step
