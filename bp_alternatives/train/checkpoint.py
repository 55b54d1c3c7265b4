"""Atomic, checksummed checkpoints of a run's training state and history (the last
two kept), and reading them back."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import jax
from flax import serialization

from bp_alternatives.atomic import write_atomic

CHECKPOINT = "checkpoint.msgpack"
PREVIOUS = "checkpoint.prev.msgpack"  # the one before, kept as a fall-back


class CheckpointMismatchError(ValueError):
    """The checkpoint in a run directory belongs to a different configuration."""


class CheckpointDamagedError(ValueError):
    """A checkpoint file that is truncated, empty, or fails its checksum (the
    message names the file)."""


class Checkpointer:
    """Atomic checkpoints of the training state and history in ``directory``.

    ``checkpoint.msgpack``, written to a temp file and renamed: an 8-byte length, the
    JSON metadata (epoch, histories, statuses, ``tag``, and the ``sha256`` and size
    of the state), then the (possibly seed-batched) ``TrainState`` serialised with
    ``flax.serialization``. A run killed at any moment leaves either the previous
    checkpoint or the new one, never the state of one epoch beside the history of
    another. Before a new one is written the current one is renamed to
    ``checkpoint.prev.msgpack``, so the last two are kept. ``load`` checks the
    checksum: a damaged file (truncated, empty, garbage) is reported with its path,
    renamed to ``<name>.damaged``, and the previous checkpoint is used, or, with no
    good one, training restarts from epoch 1 (saying so). ``checkpoint.json``
    beside it is a human-readable copy of the metadata, never read back.

    ``tag`` identifies the configuration (:func:`bp_alternatives.rundir.config_tag`:
    a hash of the resolved config); loading a checkpoint written under another tag
    raises :class:`CheckpointMismatchError` instead of silently continuing someone
    else's run. Randomness needs no saving: every key is ``fold_in(key, epoch or
    step)``.
    """

    def __init__(self, directory: str, every: int, tag: str | None = None):
        self.directory = directory
        self.every = every
        self.tag = tag
        self.path = os.path.join(directory, CHECKPOINT)
        self.previous = os.path.join(directory, PREVIOUS)
        self.meta_path = os.path.join(directory, "checkpoint.json")

    def due(self, epoch: int, last: bool) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or last)

    def save(self, state, meta: dict[str, Any]) -> None:
        if jax.process_index() != 0:  # several hosts: the first one writes
            return
        os.makedirs(self.directory, exist_ok=True)
        blob = serialization.to_bytes(jax.device_get(state))
        check = {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
        head = json.dumps({**meta, "tag": self.tag, **check}).encode()
        if os.path.exists(self.path):
            os.replace(self.path, self.previous)
        write_atomic(self.path, len(head).to_bytes(8, "little") + head + blob)
        write_atomic(self.meta_path, head)  # for people; load() never reads it

    def load(self, template) -> tuple[Any, dict[str, Any]] | None:
        """``(state shaped like template, metadata)`` of the newest good checkpoint,
        or ``None`` without one; :class:`CheckpointMismatchError` for another
        configuration's checkpoint. A damaged file is reported (stderr) and skipped.
        """
        damaged = []
        for path in (self.path, self.previous):
            if not os.path.exists(path):
                continue
            try:
                meta, raw_state = _split(path)
            except CheckpointDamagedError as e:
                damaged.append(path)
                print(f"checkpoint: warning: {e}", file=sys.stderr)
                if jax.process_index() == 0:  # never rotated in as the previous one
                    os.replace(path, f"{path}.damaged")
                continue
            if meta.get("tag") != self.tag:
                raise CheckpointMismatchError(
                    f"{path} is a checkpoint of a different configuration (tag "
                    f"{meta.get('tag')!r}, this run {self.tag!r}); use another "
                    "output directory (hydra.run.dir=... or hydra.sweep.dir=...) or "
                    "delete it"
                )
            state = serialization.from_bytes(jax.device_get(template), raw_state)
            if damaged:
                print(
                    f"checkpoint: resuming from the previous checkpoint {path} "
                    f"(epoch {meta.get('epoch')})",
                    file=sys.stderr,
                )
            return state, meta
        if damaged:
            print(
                f"checkpoint: no good checkpoint in {self.directory}; training "
                "from epoch 1",
                file=sys.stderr,
            )
        return None


def _split(path: str) -> tuple[dict[str, Any], bytes]:
    """(metadata, serialised state) of a checkpoint file, checked against the
    ``sha256`` its metadata records (files written without one are checked only
    for their structure). :class:`CheckpointDamagedError` names the file."""

    def damaged(why: str) -> CheckpointDamagedError:
        return CheckpointDamagedError(
            f"{path} is damaged ({why}); it is not used (kept as {path}.damaged)"
        )

    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise damaged(f"{len(raw)} bytes: empty or truncated")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise damaged(f"its metadata says {n} bytes, the file has {len(raw) - 8}")
    try:
        meta = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(f"metadata not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise damaged("metadata not a JSON object")
    blob = raw[8 + n :]
    want = meta.get("sha256")
    if want is not None and hashlib.sha256(blob).hexdigest() != want:
        raise damaged(
            f"sha256 mismatch: {len(blob)} bytes of state, {meta.get('size')} written"
        )
    if want is None:  # written before checkpoints carried a checksum
        try:
            serialization.msgpack_restore(blob)
        except Exception as e:  # msgpack's own errors: truncated, garbage
            raise damaged(f"state not msgpack: {type(e).__name__}") from e
    return meta, blob


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, raw state dict) of a checkpoint file, without a template;
    :class:`CheckpointDamagedError` for a damaged one."""
    meta, raw_state = _split(path)
    return meta, serialization.msgpack_restore(raw_state)
