"""Atomic file writes: write a temporary file beside the target, then rename it into place.

Failed downloads likewise leave no empty folders behind (:func:`no_empty_dirs_left`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path`` in one rename, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # mkstemp makes the file private (0600); give it the mode open(path, "w") would:
        # an existing file's own, else what the umask leaves of 0666
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~current_umask()
        os.chmod(tmp, mode)
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    # Linux says it; setting and restoring it instead races with threads creating files
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def no_empty_dirs_left(path: str | Path) -> Iterator[None]:
    """When the body raises, remove the folders up to ``path`` that did not exist before it and
    are empty now (a download that cannot reach its server leaves no empty ``data/``)."""
    path = Path(path).absolute()
    new = [p for p in (path, *path.parents) if not p.exists()]  # the deepest first
    try:
        yield
    except BaseException:
        for folder in new:
            with contextlib.suppress(OSError):  # not empty (a partial file is kept) or gone
                folder.rmdir()
        raise
