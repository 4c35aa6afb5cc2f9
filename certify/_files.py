"""Atomic file writes: a crash or a full disk never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_text_atomic(path, text: str) -> None:
    """Writes `text` (UTF-8) to a temporary file beside `path`, flushed to disk, then moves it over
    `path` with os.replace: a crash leaves either the old file or the new one. An existing file keeps
    its permissions; a new one gets what open() would give (mkstemp alone gives 0600)."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def remove_stale_temporaries(folder) -> list[Path]:
    """Deletes the temporary files write_text_atomic leaves in `folder` when its process is killed
    between creating and renaming one (".NAME.XXXX.tmp"). Only for a folder this process holds
    exclusively (a run folder under its lock): another writer's temporary would vanish under it."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0o022)  # the umask can only be read by setting it; set it back at once
        os.umask(umask)
        return 0o666 & ~umask
