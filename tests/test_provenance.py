"""Provenance in results.json: versions, git commit and dirty flag, device, start."""

from __future__ import annotations

import datetime as dt
import subprocess

import jax

from bp_alternatives.experiment import run
from bp_alternatives.provenance import git_state
from tests.conftest import compose_cfg


def test_git_state_commit_and_dirty(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, capture_output=True
        )

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert git_state(str(tmp_path)) == (head, False)
    (tmp_path / "f.txt").write_text("b")
    git_state.cache_clear()
    assert git_state(str(tmp_path)) == (head, True)
    git_state.cache_clear()
    git_state.cache_clear()
    assert git_state(str(tmp_path / ".."))[0] != head


def test_results_json_carries_provenance(tmp_path):
    cfg = compose_cfg(
        ["model.hidden=[4]", "trainer.epochs=1", "trainer.batch_size=512"]
    )
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    res = run(cfg, out_dir=str(tmp_path))
    p = res["provenance"]
    assert p["versions"]["jax"] == jax.__version__
    assert set(p["versions"]) == {
        "bp_alternatives",
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "numpy",
    }
    assert p["device_kind"] == jax.devices()[0].device_kind and p["hostname"]
    assert isinstance(p["git_dirty"], bool) and len(p["git_commit"]) == 40
    assert dt.datetime.fromisoformat(p["start_time"]) >= before
