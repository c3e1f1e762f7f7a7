"""A run directory: resolved config, metrics log, summary, checkpoints, plots.

    runs/<experiment>/<timestamp>[-<sweep point>]/
        config.json  metrics.jsonl  summary.json  report.html  plots/  checkpoints/

Only the main process writes (several GPUs share one run directory); checkpoints
and JSON files are written to a temporary file and renamed, so an interrupted
write never leaves a half file behind.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from syllabus.errors import UsageError

INTERRUPTED: Path | None = None  # the run a Ctrl-C stopped, named in the message


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """`np.savez_compressed` of `arrays`, written atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, default=_json_default)
    return atomic_write_bytes(path, text.encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"corrupt JSON file: {path} ({e.__class__.__name__})") from None


def save_checkpoint(path: Path, state: dict) -> Path:
    """torch.save to a temporary file, then rename: `path` is always a whole checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with `weights_only=True`; a missing or corrupt file is a UsageError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"missing checkpoint: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise UsageError(f"corrupt checkpoint: {path} ({e.__class__.__name__})") from None


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def check_out_dir(out: Path) -> Path:
    """`out` as a writable directory (created if missing), or a UsageError saying why not."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise UsageError(f"--out {out} is not a writable directory ({e.strerror})") from None
    return out


def new_run_dir(out: Path, experiment: str, stamp: str, suffix: str = "") -> Path:
    """A fresh `out/<experiment>/<stamp>[-suffix]` directory (numbered if it exists).

    Creation is atomic (`mkdir` without exist_ok), so two processes starting in the same
    second get two directories; the path must stay inside `out`.
    """
    name = f"{stamp}-{suffix}" if suffix else stamp
    base = Path(out) / experiment / name
    if not base.resolve().is_relative_to(Path(out).resolve()):
        raise UsageError(f"run directory {base} would lie outside --out {out}")
    path, k = base, 1
    while is_main_process():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            break
        except FileExistsError:
            k += 1
            path = base.with_name(f"{name}.{k}")
    return _same_on_every_process(path)


def _same_on_every_process(path: Path) -> Path:
    """Under `accelerate launch`, every process takes the main process's directory."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return path
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState(cpu=not torch.cuda.is_available())  # joins the process group (gloo on a CPU-only machine)
    shared = broadcast_object_list([str(path)])
    return Path(shared[0])


class Run:
    """Files of one run. Writes happen on the main process only.

    Args:
        path: the run directory (created if missing).
        device: "auto", "cpu" or "cuda", for the training loop.
    """

    def __init__(self, path: Path, device: str = "auto", resuming: bool = False, tensorboard: bool = False):
        self.path = Path(path)
        self.device = device
        self.resuming = resuming  # continuing an earlier run (`--resume`)
        self.tensorboard = tensorboard  # also write each logged record as TensorBoard scalars
        self._writer = None
        self.plots_dir = self.path / "plots"
        self.checkpoint_dir = self.path / "checkpoints"
        self.pending_config: dict | None = None  # written by flush_config once training may start
        self.pending_ema: dict | None = None  # weight averages read from last.pt, for the loop core
        self._lock = None
        if is_main_process():
            self.plots_dir.mkdir(parents=True, exist_ok=True)
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    # --- exclusive use ------------------------------------------------------
    def lock(self) -> Run:
        """Take the run directory for this process; a second process gets a UsageError."""
        import fcntl

        if not is_main_process() or self._lock is not None:
            return self
        f = open(self.path / ".lock", "a+")  # noqa: SIM115 - held open for the life of the run
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise UsageError(f"{self.path} is in use by another syllabus process; wait for it to end") from None
        self._lock = f
        return self

    def unlock(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- config and summary -------------------------------------------------
    def save_config(self, experiment: str, profile: str, config: dict, options: dict | None = None) -> None:
        if is_main_process():
            data = {"experiment": experiment, "profile": profile, "config": config}
            if options is not None:
                data["options"] = options
            write_json(self.path / "config.json", data)

    def defer_config(self, experiment: str, profile: str, config: dict, options: dict | None = None) -> None:
        """Keep the config to write once the run's checkpoint has loaded (see `flush_config`)."""
        self.pending_config = {"experiment": experiment, "profile": profile, "config": config, "options": options}

    def flush_config(self) -> None:
        """Write a deferred config (a resumed run's, after its checkpoint loaded and matched)."""
        if self.pending_config is not None:
            self.save_config(**self.pending_config)
            self.pending_config = None

    def read_config(self) -> dict:
        return read_json(self.path / "config.json")

    def save_summary(self, summary: dict) -> None:
        if is_main_process():
            write_json(self.path / "summary.json", summary)

    def read_summary(self) -> dict:
        return read_json(self.path / "summary.json")

    # --- metrics ------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log(self, record: dict) -> None:
        """Append one JSON record (an epoch or a step) to metrics.jsonl (and TensorBoard when on)."""
        if is_main_process():
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record, default=_json_default) + "\n")
            if self.tensorboard:
                self._tensorboard(record)

    def _tensorboard(self, record: dict) -> None:
        """Numbers of a record as scalars: step records against the step, epoch records the epoch."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path / "tensorboard"))
        x = int(record.get("step", record.get("epoch", 0)))
        axis = "step" if "step" in record else "epoch"
        for key, value in record.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{key} (per {axis})", value, x)
        self._writer.flush()

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for i, line in enumerate(self.metrics_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UsageError(f"corrupt line {i} in {self.metrics_path}") from None
        return rows

    def reset_metrics(self) -> None:
        """Start the metrics log afresh (a run that restarts from scratch)."""
        if is_main_process():
            self.metrics_path.unlink(missing_ok=True)

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop records after `last_epoch` (a resumed run rewrites them)."""
        if not is_main_process() or not self.metrics_path.exists():
            return
        keep = [r for r in self.read_metrics() if r.get("epoch", 0) <= last_epoch]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        atomic_write_bytes(self.metrics_path, text.encode())

    # --- checkpoints ----------------------------------------------------------
    def checkpoint(self, name: str) -> Path:
        return self.checkpoint_dir / f"{name}.pt"

    def save_checkpoint(self, name: str, state: dict) -> None:
        if is_main_process():
            save_checkpoint(self.checkpoint(name), state)

    def load_checkpoint(self, name: str, map_location: str = "cpu") -> dict | None:
        path = self.checkpoint(name)
        return load_checkpoint(path, map_location) if path.exists() else None
