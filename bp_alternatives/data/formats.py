"""File formats of the published datasets: IDX (MNIST, Fashion-MNIST), CIFAR-10's
python-pickle batches, and ``.tar.gz`` members read in memory.

Every parser takes the raw (decompressed) bytes and the path they came from, and
raises ``CorruptFileError`` naming that path when the bytes do not have the format.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bp_alternatives.data.files import CorruptFileError

_IDX_TYPES = {0x08: np.uint8}


def parse_idx(raw: bytes, path: Path | str) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format): magic ``00 00 <type> <ndim>``, then
    ``ndim`` big-endian uint32 sizes, then the data. The length must match exactly."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise CorruptFileError(
            f"{path}: not an IDX file (the header must start with two zero bytes; "
            f"got {raw[:4].hex() or 'an empty file'})"
        )
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_TYPES:
        raise CorruptFileError(
            f"{path}: IDX data type 0x{dtype_code:02x} is not supported (only 0x08, "
            "unsigned bytes, as MNIST and Fashion-MNIST use)"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise CorruptFileError(f"{path}: IDX header truncated ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    want = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != want:
        raise CorruptFileError(
            f"{path}: IDX header says shape {dims} ({want} bytes) but the decompressed "
            f"file has {len(raw)} bytes; it is truncated or corrupt"
        )
    return np.frombuffer(raw, _IDX_TYPES[dtype_code], offset=header).reshape(dims)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain: dicts, lists, numbers, bytes and
    numpy arrays. Anything else (a pickle can call any importable function) is refused.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 hold bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module == "numpy.core.multiarray":  # Python 2 era name; numpy 2 moved it
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def parse_cifar_batch(raw: bytes, path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 python batch: ``{b"data": uint8 [N, 3072], b"labels": [N]}``.

    Returns images ``[N, 32, 32, 3]`` (the rows hold the R, G, B planes, each 32x32
    row-major) and int labels ``[N]``.
    """
    try:
        d = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means a damaged batch
        raise CorruptFileError(
            f"{path}: not a readable CIFAR batch ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise CorruptFileError(
            f"{path}: a CIFAR batch is a dict with b'data' and b'labels'; got "
            f"{type(d).__name__} with keys {sorted(d) if isinstance(d, dict) else '-'}"
        )
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise CorruptFileError(
            f"{path}: b'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise CorruptFileError(
            f"{path}: {data.shape[0]} images but labels of shape {labels.shape}"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_tar_members(path: Path, names: Sequence[str]) -> dict[str, bytes]:
    """Read members (by base name) from a ``.tar.gz`` in memory, never extracting."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base in names and member.isfile():
                    f = tar.extractfile(member)
                    out[base] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise CorruptFileError(
            f"{path} is not a complete tar.gz archive ({type(err).__name__}: {err}); "
            "it is probably truncated or corrupt: delete it and provide it again"
        ) from err
    missing = [n for n in names if n not in out]
    if missing:
        raise CorruptFileError(f"{path}: archive lacks member(s) {missing}")
    return out
