"""Atomic file writes: a reader sees the previous file or the new one, never half.

Every file the package writes for others to read (``results.json``, checkpoints,
``metrics.csv``, the comparison's tables and plots, the dataset caches, downloads)
goes through ``atomic_path``: the content is written to a hidden temporary file in the
same directory, flushed to disk, and renamed over the target (``os.replace`` is atomic
within one file system). A write that fails or is interrupted removes its temporary
file and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


def _temp_name(path: Path) -> Path:
    """``<dir>/.<stem>.tmp.<pid>.<thread><suffix>``: hidden, unique per writer, and
    with the target's suffix (``np.savez`` and ``savefig`` choose a format by it)."""
    unique = f"{os.getpid()}.{threading.get_ident()}"
    return path.with_name(f".{path.stem}.tmp.{unique}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to.

    On a normal exit the temporary file is synced to disk and renamed to ``path``;
    on any exception (``KeyboardInterrupt`` included) it is removed and the
    exception propagates, so ``path`` keeps its previous content. The body must
    create the file; the directory must exist.
    """
    target = Path(path)
    tmp = _temp_name(target)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
