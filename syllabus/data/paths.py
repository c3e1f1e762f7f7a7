"""Where downloaded and generated data live on disk."""

from __future__ import annotations

import os
from pathlib import Path

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
    chosen = override or os.environ.get(ENV_VAR) or DEFAULT_DIR
    return Path(chosen).expanduser()
