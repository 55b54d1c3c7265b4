"""Atomic checkpoints of a run's training state and history, and reading them back."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
from flax import serialization

from bp_alternatives.atomic import write_atomic


class CheckpointMismatchError(ValueError):
    """The checkpoint in a run directory belongs to a different configuration."""


class Checkpointer:
    """Atomic checkpoints of the training state and history in ``directory``.

    One file, ``checkpoint.msgpack``, written to a temp file and renamed: an 8-byte
    length, the JSON metadata (epoch, histories, statuses, ``tag``), then the (possibly
    seed-batched) ``TrainState`` serialised with ``flax.serialization``. A run killed
    at any moment leaves either the previous checkpoint or the new one, never the
    state of one epoch beside the history of another. ``checkpoint.json`` beside it
    is a human-readable copy of the metadata, never read back.
    ``tag`` identifies the configuration (:func:`bp_alternatives.experiment.config_tag`:
    a hash of the resolved config); loading a checkpoint written under another tag
    raises :class:`CheckpointMismatchError` instead of silently continuing someone
    else's run. Randomness needs no saving: every key is ``fold_in(key, epoch or
    step)``.
    """

    def __init__(self, directory: str, every: int, tag: str | None = None):
        self.directory = directory
        self.every = every
        self.tag = tag
        self.path = os.path.join(directory, "checkpoint.msgpack")
        self.meta_path = os.path.join(directory, "checkpoint.json")

    def due(self, epoch: int, last: bool) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or last)

    def save(self, state, meta: dict[str, Any]) -> None:
        if jax.process_index() != 0:  # several hosts: the first one writes
            return
        os.makedirs(self.directory, exist_ok=True)
        head = json.dumps({**meta, "tag": self.tag}).encode()
        blob = serialization.to_bytes(jax.device_get(state))
        write_atomic(self.path, len(head).to_bytes(8, "little") + head + blob)
        write_atomic(self.meta_path, head)  # for people; load() never reads it

    def load(self, template) -> tuple[Any, dict[str, Any]] | None:
        """``(state shaped like template, metadata)``, or ``None`` without a file;
        :class:`CheckpointMismatchError` for another configuration's checkpoint."""
        if not os.path.exists(self.path):
            return None
        meta, raw_state = _split(self.path)
        if meta.get("tag") != self.tag:
            raise CheckpointMismatchError(
                f"{self.path} is a checkpoint of a different configuration (tag "
                f"{meta.get('tag')!r}, this run {self.tag!r}); use another output "
                "directory (hydra.run.dir=... or hydra.sweep.dir=...) or delete it"
            )
        return serialization.from_bytes(jax.device_get(template), raw_state), meta


def _split(path: str) -> tuple[dict[str, Any], bytes]:
    """(metadata, serialised state) of a checkpoint file."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, raw state dict) of a checkpoint file, without a template."""
    meta, raw_state = _split(path)
    return meta, serialization.msgpack_restore(raw_state)
