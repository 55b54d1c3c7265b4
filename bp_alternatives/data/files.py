"""Dataset files on disk: where to look, how to download, how to verify, how to cache.

The image loaders in ``bp_alternatives.data.images`` describe each file they need as a
``FileSpec`` (its published name and its checksums) and call ``locate`` to find it:

1. ``<root>/<dataset>/`` and ``<root>/`` (``root`` is ``data.root``; by default
   ``$BPA_DATA``, else ``$XDG_CACHE_HOME/bp_alternatives``, else
   ``~/.cache/bp_alternatives``);
2. system directories, e.g. ``/usr/share/datasets/fashion-mnist/`` where Debian's
   ``dataset-fashion-mnist`` package installs Fashion-MNIST;
3. a download from each mirror in turn into ``<root>/<dataset>/`` (a timeout per read
   and a deadline for the whole file),
   verified before it is renamed into place; never when ``data.download=false`` or the
   environment variable ``BPA_OFFLINE`` is set (CI sets it).

A file is used only after its checksum matched (``verify=False`` turns that off and
keeps the structural checks: IDX header and length, gzip CRC, pickle layout). Parsed
arrays are cached in ``<root>/<dataset>/<dataset>.npz``, so the files are read and
checked once.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import time
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bp_alternatives.atomic import atomic_path

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0  # seconds, per connection attempt and per read
DEFAULT_DEADLINE = 1800.0  # seconds, for one file's whole download from one mirror
CACHE_VERSION = 1
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")  # the arrays a cache holds


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is neither on disk nor downloadable."""


class CorruptFileError(ValueError):
    """A dataset file is truncated, malformed or fails its checksum."""


class FileSpec(NamedTuple):
    """A published dataset file and the checksums known for it.

    ``sha256`` / ``md5`` are of the *decompressed* bytes (the IDX file inside the
    ``.gz``, a CIFAR batch inside the tarball): they survive recompression, which
    matters because Debian recompresses Fashion-MNIST's ``.gz`` files.
    ``packed_md5`` / ``packed_sha256`` are of the file exactly as the canonical
    mirrors serve it; they are checked only where no decompressed checksum is known.
    """

    name: str
    sha256: str | None = None
    md5: str | None = None
    packed_md5: str | None = None
    packed_sha256: str | None = None


def default_root() -> Path:
    """``$BPA_DATA``, else ``$XDG_CACHE_HOME/bp_alternatives``, else ``~/.cache``'s."""
    if os.environ.get("BPA_DATA"):
        return Path(os.environ["BPA_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "bp_alternatives"


def resolve_root(root: str | os.PathLike | None) -> Path:
    return default_root() if root in (None, "") else Path(root).expanduser()


def search_dirs(
    root: Path, dataset: str, system_dirs: Sequence[str] = ()
) -> list[Path]:
    """The directories searched, in order."""
    return [root / dataset, root, *(Path(d) for d in system_dirs)]


def _candidates(name: str) -> list[str]:
    """A ``.gz`` file may also be present decompressed (``gunzip`` in place)."""
    return [name, name[: -len(".gz")]] if name.endswith(".gz") else [name]


def find_file(spec: FileSpec, dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        for n in _candidates(spec.name):
            p = d / n
            if p.is_file():
                return p
    return None


# --------------------------------------------------------------------------------------
# Reading and checking


def read_packed(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise CorruptFileError(f"cannot read {path}: {err}") from err


def decompress(path: Path, packed: bytes) -> bytes:
    """The decompressed bytes of a ``.gz`` file (or ``packed`` itself otherwise).

    A truncated or damaged gzip stream (missing end marker, CRC or length mismatch)
    raises ``CorruptFileError`` naming the file.
    """
    if path.suffix != ".gz":
        return packed
    try:
        return gzip.decompress(packed)
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptFileError(
            f"{path} is not a complete gzip file ({type(err).__name__}: {err}); "
            "it is probably truncated or corrupt: delete it and provide it again"
        ) from err


def _hexdigest(algo: str, data: bytes) -> str:
    return hashlib.new(algo, data).hexdigest()


def check(spec: FileSpec, path: Path, packed: bytes, raw: bytes) -> str:
    """Check ``path`` against the strongest checksum known for it.

    Returns a short description of what was checked; raises ``CorruptFileError`` on a
    mismatch or when no checksum applies to this copy of the file.
    """
    if spec.sha256 or spec.md5:
        algo, want = ("sha256", spec.sha256) if spec.sha256 else ("md5", spec.md5)
        got = _hexdigest(algo, raw)
        if got != want:
            raise CorruptFileError(
                f"{path}: {algo} of the decompressed bytes is {got}, expected {want} "
                f"for {spec.name}; the file is corrupt, truncated or not the "
                "published one: delete it and provide it again"
            )
        return f"{algo} of the decompressed bytes"
    is_packed = path.name == spec.name and spec.name.endswith((".gz", ".tar.gz"))
    if is_packed and (spec.packed_sha256 or spec.packed_md5):
        if spec.packed_sha256:
            algo, want = "sha256", spec.packed_sha256
        else:
            algo, want = "md5", spec.packed_md5
        got = _hexdigest(algo, packed)
        if got != want:
            raise CorruptFileError(
                f"{path}: {algo} is {got}, expected {want} (the published checksum of "
                f"the original {spec.name}). No checksum of the decompressed bytes is "
                "recorded for this file, so a recompressed copy cannot be verified: "
                "use the original file, or pass data.verify=false to accept it on the "
                "structural checks alone"
            )
        return f"{algo} of the file as published"
    raise CorruptFileError(
        f"{path}: no checksum is recorded for a copy of {spec.name} in this form "
        "(only for the original compressed file); provide the original file or pass "
        "data.verify=false to accept it on the structural checks alone"
    )


def load_verified(spec: FileSpec, path: Path, verify: bool) -> bytes:
    """Read ``path``, decompress it, check it; return the decompressed bytes."""
    packed = read_packed(path)
    raw = decompress(path, packed)
    if verify:
        what = check(spec, path, packed, raw)
        log.info("verified %s (%s)", path, what)
    return raw


# --------------------------------------------------------------------------------------
# Downloading


def _fetch(url: str, dest: Path, timeout: float, deadline: float) -> None:
    """Copy ``url`` to ``dest``; ``TimeoutError`` once ``deadline`` seconds have
    passed (checked after every read, each read bounded by ``timeout``)."""
    end = time.monotonic() + deadline
    got = 0
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as f:
        while chunk := resp.read1(1 << 20):
            f.write(chunk)
            got += len(chunk)
            if time.monotonic() > end:
                raise TimeoutError(
                    f"gave up after data.deadline={deadline:g} s with {got} bytes "
                    "received (the mirror is too slow); raise data.deadline or "
                    "provide the file yourself"
                )


def download(
    spec: FileSpec,
    mirrors: Sequence[str],
    dest_dir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
    verify: bool = True,
) -> tuple[Path | None, list[str]]:
    """Try each mirror in turn; return ``(path or None, errors)``.

    ``timeout`` bounds each connection attempt and each read (seconds);
    ``deadline`` bounds each mirror's whole download, so a mirror that trickles a
    byte every few seconds is given up too (``TimeoutError`` in ``errors``).

    The file is written to a temporary file in ``dest_dir``, decompressed and
    checked, and only then renamed to ``<dest_dir>/<name>``; a failed attempt leaves
    nothing behind.
    """
    errors = []
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return None, [f"cannot create {dest_dir}: {err}"]
    dest = dest_dir / spec.name
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + spec.name
        try:
            log.warning("downloading %s -> %s", url, dest)
            with atomic_path(dest) as part:
                _fetch(url, part, timeout, deadline)
                packed = part.read_bytes()
                # Decompress only where a checksum of the decompressed bytes is known
                # (a CIFAR tarball is checked as published, without inflating 170 MB).
                raw = decompress(dest, packed) if (spec.sha256 or spec.md5) else b""
                if verify:
                    check(spec, dest, packed, raw)
            return dest, errors
        except (OSError, ValueError, http.client.HTTPException) as err:
            errors.append(f"{url}: {type(err).__name__}: {err}")
    return None, errors


def locate(
    dataset: str,
    specs: Sequence[FileSpec],
    *,
    root: Path,
    system_dirs: Sequence[str] = (),
    mirrors: Sequence[str] = (),
    download_ok: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
    verify: bool = True,
    hint: str = "",
) -> dict[str, Path]:
    """Find (or download) every file in ``specs``; ``{spec.name: path}``.

    Raises ``DatasetNotFoundError`` naming each missing file, where it was looked
    for, what the download attempts said and how to provide the file.
    """
    dirs = search_dirs(root, dataset, system_dirs)
    offline = bool(os.environ.get("BPA_OFFLINE"))
    download_ok = download_ok and not offline
    found: dict[str, Path] = {}
    problems: list[str] = []
    for spec in specs:
        path = find_file(spec, dirs)
        if path is None and download_ok and mirrors:
            path, errors = download(
                spec,
                mirrors,
                root / dataset,
                timeout=timeout,
                deadline=deadline,
                verify=verify,
            )
            if path is None:
                problems.append(
                    f"  {spec.name}: download failed:\n"
                    + "\n".join(f"    {e}" for e in errors)
                )
        elif path is None:
            why = (
                "$BPA_OFFLINE is set"
                if offline
                else "data.download=false"
                if not download_ok
                else "no mirror is known"
            )
            problems.append(f"  {spec.name}: not downloaded ({why})")
        if path is not None:
            found[spec.name] = path
    if problems:
        urls = ", or ".join(m.rstrip("/") + "/<file>" for m in mirrors) or "none known"
        raise DatasetNotFoundError(
            f"{dataset}: missing file(s):\n"
            + "\n".join(problems)
            + "\nLooked in: "
            + ", ".join(str(d) for d in dirs)
            + f"\nTo provide them: save them in {root / dataset}/ (from {urls})"
            + (f"; {hint}" if hint else "")
            + "; or point data.root (or $BPA_DATA) at a directory that holds them."
        )
    return found


# --------------------------------------------------------------------------------------
# The parsed-array cache


def load_cache(path: Path, keys: Sequence[str], need_verified: bool):
    """The cached arrays, or ``None`` if absent, unreadable, incomplete, or built
    without checksums while checksums are asked for."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION:
                return None
            if need_verified and not bool(z["verified"]):
                return None
            arrays = {k: z[k] for k in keys}
        for split in ("train", "test"):
            x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
            if x is not None and y is not None and len(x) != len(y):
                raise ValueError(f"{len(x)} {split} inputs but {len(y)} labels")
    except Exception as err:  # OSError, KeyError, ValueError, zipfile.BadZipFile...
        log.warning("ignoring unreadable cache %s (%s); rebuilding it", path, err)
        return None
    return arrays


def save_cache(path: Path, arrays: dict[str, np.ndarray], verified: bool) -> bool:
    """Write the cache atomically; ``False`` (and a log line) if the directory is not
    writable -- the data still loads, only the next start is slower."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, version=CACHE_VERSION, verified=verified, **arrays)
        return True
    except OSError as err:
        log.warning("could not write cache %s: %s", path, err)
        return False
