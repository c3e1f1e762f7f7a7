"""Sweeps on a cluster through submitit: one job per sweep point, requeued on preemption.

    syllabus run EXP --sweep k=a,b --launcher slurm --set launcher.partition=gpu
    syllabus report runs/EXP/<stamp>-sweep          # whatever has finished; pending and failed listed
    syllabus run --resume runs/EXP/<stamp>-sweep --launcher slurm   # finished points skipped

Every point's run directory is made before submission and written only by its job; the
job ids go into the sweep's `sweep.json`. A job that SLURM preempts or times out is
requeued (submitit's `Checkpointable`) and resumes from the point's `last.pt`.
`--launcher submitit-local` runs the same path with submitit's LocalExecutor (no SLURM).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import submitit

from syllabus.errors import UsageError
from syllabus.options import RunOptions

LAUNCHERS = ("local", "submitit-local", "slurm")
JOBS = "jobs"  # submitit's folder inside the sweep directory


def check_launcher(kind: str) -> None:
    """Fail before anything is submitted when the launcher cannot work here."""
    if kind not in LAUNCHERS:
        raise UsageError(f"--launcher {kind}: valid: {', '.join(LAUNCHERS)}")
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("--launcher slurm: sbatch is not on PATH; submit from the cluster's login node "
                         "(or use --launcher local)")


def make_executor(kind: str, folder: Path, options: RunOptions) -> submitit.Executor:
    job = options.launcher
    if kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=job.time)
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    extra = {k: v for k, v in (("slurm_partition", job.partition), ("slurm_account", job.account),
                               ("slurm_qos", job.qos)) if v}
    executor.update_parameters(timeout_min=job.time, gpus_per_node=job.gpus, cpus_per_task=job.cpus,
                               mem_gb=job.mem_gb, slurm_array_parallelism=job.max_parallel, **extra)
    return executor


class PointJob(submitit.helpers.Checkpointable):
    """One sweep point run in a job; on requeue the same call resumes from the point's last.pt."""

    def __init__(self, experiment: str, profile: str, config: dict, run_dir: str, device: str, options: dict):
        self.experiment, self.profile, self.config = experiment, profile, config
        self.run_dir, self.device, self.options = run_dir, device, options

    def __call__(self) -> str:
        from syllabus import runner
        from syllabus.config import from_dict
        from syllabus.experiments import get_experiment
        from syllabus.runs import Run

        exp = get_experiment(self.experiment)
        cfg = from_dict(exp.config_cls, self.config)
        path = Path(self.run_dir)
        started = (path / "checkpoints" / "last.pt").exists()
        run = Run(path, self.device, resuming=started, tensorboard=self.options["log"]["tensorboard"])
        return str(runner.run_one(exp, self.profile, cfg, run, self.options))


def submit(kind: str, sweep_dir: Path, jobs: list[PointJob], options: RunOptions) -> list[str]:
    """Submit the jobs (as one array where the cluster has them); returns their job ids."""
    executor = make_executor(kind, sweep_dir / JOBS, options)
    with executor.batch():
        submitted = [executor.submit(job) for job in jobs]
    return [j.job_id for j in submitted]


def job_state(sweep_dir: Path, entry: dict) -> tuple[str, str]:
    """("ok" | "pending" | "failed", the tail of the job's log when it failed) of a sweep point."""
    if (Path(entry["dir"]) / "summary.json").exists() and (Path(entry["dir"]) / "report.html").exists():
        return "ok", ""
    job_id = entry.get("job_id")
    if not job_id:
        return entry.get("status", "failed"), entry.get("error", "")
    result = next((sweep_dir / JOBS).glob(f"{job_id}_*_result.pkl"), None)
    if result is None:
        return "pending", ""
    outcome, value = submitit.core.utils.pickle_load(result)
    if outcome == "success":
        return "failed", "the job ended without writing the point's summary"
    return "failed", "\n".join(str(value).strip().splitlines()[-6:])
