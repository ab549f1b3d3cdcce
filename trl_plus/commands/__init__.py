"""One module per ``trl-plus`` sub-command, and what they share."""

from __future__ import annotations

import os
from pathlib import Path


def cli_path(value: str | os.PathLike) -> Path:
    """A path given on the command line: relative to the working directory, made absolute
    where it enters so that no later step can resolve it against another folder."""
    return Path(os.path.abspath(Path(value).expanduser()))
