"""Where downloaded and generated data live on disk."""

from __future__ import annotations

import os
from pathlib import Path

from syllabus.errors import UsageError

ENV_VAR = "SYLLABUS_DATA"
DEFAULT_DIR = Path("~/.cache/syllabus")


def data_dir(override: str | None = None) -> Path:
    """The data cache directory.

    Args:
        override: the value of ``--set data.dir=...``; wins when given.

    Returns:
        ``override``, else ``$SYLLABUS_DATA``, else ``~/.cache/syllabus`` (user-expanded;
        not created here).
    """
    chosen = Path(override or os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser()
    for path in (chosen, *chosen.parents):
        if path.exists():
            if not path.is_dir():
                key = "data.dir" if override else ENV_VAR
                raise UsageError(f"the data directory {chosen} ({key}) is not a directory: {path} is a file")
            break
    return chosen
