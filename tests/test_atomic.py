"""bp_alternatives.atomic: a write either replaces the file whole or leaves it as it
was, with no temporary file left behind."""

from __future__ import annotations

import numpy as np
import pytest

from bp_alternatives.atomic import atomic_path, write_atomic


def test_write_atomic_replaces_text_and_bytes(tmp_path):
    path = tmp_path / "results.json"
    write_atomic(path, '{"a": "±1"}')
    assert path.read_text(encoding="utf-8") == '{"a": "±1"}'
    write_atomic(str(path), b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_write_keeps_the_old_file_and_no_temp_file(tmp_path, error):
    path = tmp_path / "metrics.csv"
    path.write_text("old, complete\n")
    with pytest.raises(error):
        with atomic_path(path) as tmp:
            tmp.write_text("new, half")
            raise error
    assert path.read_text() == "old, complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_the_temp_file_is_hidden_beside_the_target_with_its_suffix(tmp_path):
    """np.savez appends ``.npz`` to a name without it, savefig picks the format by
    the suffix: the temporary name must end like the target."""
    path = tmp_path / "cache.npz"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".")
        assert tmp.suffix == ".npz" and tmp != path
        np.savez(tmp, x=np.arange(3))
    with np.load(path) as z:
        np.testing.assert_array_equal(z["x"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]
