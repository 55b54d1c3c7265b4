"""Several seeds in one program (vmap) and data parallelism equal the plain runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bp_alternatives.experiment import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.hidden=[32]", "trainer.epochs=3", "trainer.batch_size=64"]
KEYS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "step_loss")


def _assert_histories_close(h1, h2, rtol):
    assert len(h1) == len(h2)
    for a, b in zip(h1, h2):
        for k in KEYS:
            assert a[k] == pytest.approx(b[k], rel=rtol, abs=rtol), (a["epoch"], k)
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=rtol)
        # arccos amplifies rounding near 0 degrees: compare to 0.1 degree (None: a
        # stage with no direction, e.g. FF's unused read-out stage)
        np.testing.assert_allclose(
            np.asarray(a["alignment_deg"], float),
            np.asarray(b["alignment_deg"], float),
            atol=0.1,
        )


@pytest.mark.parametrize("rule", ["bp", "manual_bp", "fa", "dfa", "ff", "sg", "ep"])
def test_seeds_under_vmap_equal_separate_runs(cfg_factory, tmp_path, rule):
    extra = ["model.activation=relu", "model.hidden=[32,32]"] if rule == "ff" else []
    together = run(
        cfg_factory(
            f"rule={rule}", "trainer.seeds=[0,3]", "+run_name=job", *TINY, *extra
        )
    )
    assert [r["seed"] for r in together] == [0, 3]
    for s, res in zip((0, 3), together):
        assert res["seeds_in_program"] == 2
        with open(tmp_path / f"seed={s}" / "results.json") as f:
            written = json.load(f)
        # one results.json, and one W&B run name, per seed
        assert written["seed"] == s and written["config"]["run_name"] == f"job,seed={s}"
        alone = run(
            cfg_factory(f"rule={rule}", f"seed={s}", *TINY, *extra),
            out_dir=tmp_path / f"a{s}",
        )
        assert alone["seeds_in_program"] == 1
        _assert_histories_close(res["history"], alone["history"], rtol=1e-5)
    # different seeds really are different runs
    assert (
        together[0]["history"][0]["step_loss"] != together[1]["history"][0]["step_loss"]
    )


@pytest.fixture(params=["rbg", "unsafe_rbg"])
def prng_impl(request):
    import jax

    before = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", request.param)
    yield request.param
    jax.config.update("jax_default_prng_impl", before)


def test_a_seed_does_not_depend_on_the_seeds_beside_it(prng_impl):
    """rbg / unsafe_rbg under vmap draw every seed's bits from one key (JAX's
    batching of rng_bit_generator): seed 1 must come out the same beside 0, beside
    2 and alone, for every PRNG implementation."""
    import jax
    import optax

    from bp_alternatives.data import load_xor
    from bp_alternatives.model import mlp
    from bp_alternatives.model.losses import get_loss
    from bp_alternatives.rules import fa
    from bp_alternatives.train import fit_seeds

    data, model, ce = load_xor(), mlp((2,), 2, hidden=(8,)), get_loss("mse")
    assert jax.random.PRNGKey(0).shape == (4,)  # the impl is in force

    def seed_1(seeds):
        out = fit_seeds(
            model,
            ce,
            fa(model, ce),  # random feedback B, random init, random shuffles
            optax.sgd(0.05),
            data,
            epochs=2,
            batch_size=2,
            keys=[jax.random.PRNGKey(s) for s in seeds],
            batched=len(seeds) > 1,
            progress=False,
        )
        return jax.tree_util.tree_leaves(out[seeds.index(1)]["params"])

    beside_0, beside_2, alone = seed_1([0, 1]), seed_1([2, 1]), seed_1([1])
    for a, b, c in zip(beside_0, beside_2, alone):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


_DP_SCRIPT = """
import json, sys
from tests.conftest import compose_cfg
from bp_alternatives.experiment import run
import jax
assert len(jax.devices()) == 8, jax.devices()
out = {}
for dp in (False, True):
    cfg = compose_cfg(sys.argv[2:] + [f"trainer.data_parallel={dp}"])
    out[str(dp)] = run(cfg, out_dir=sys.argv[1] + f"/dp={dp}")["history"]
print("HISTORIES" + json.dumps(out))
# the data-parallel program really is partitioned: gradients are all-reduced
import jax.numpy as jnp, optax
from bp_alternatives.data import load_digits
from bp_alternatives.model.losses import get_loss
from bp_alternatives.model import mlp
from bp_alternatives.rules import bp
from bp_alternatives.train import data_mesh, init_state, make_epoch_fn
d = load_digits()
m = mlp((64,), 10, hidden=(32,))
r, opt = bp(m, get_loss("cross_entropy")), optax.sgd(0.1)
_, shard, repl = data_mesh(True, 64)
st = jax.device_put(init_state(m, r, opt, jax.random.PRNGKey(0)), repl)
x, y = jax.device_put(jnp.asarray(d.x_train), repl), jax.device_put(d.y_train, repl)
hlo = jax.jit(make_epoch_fn(r, opt, len(d.x_train), 64, shard)).lower(
    st, x, y, jax.random.PRNGKey(1), 1).compile().as_text()
print("ALLREDUCE", "all-reduce" in hlo)
"""


def test_data_parallel_over_8_cpu_devices_equals_single_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, "-c", _DP_SCRIPT, str(tmp_path), *TINY, "rule=bp"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HISTORIES")][0]
    hist = json.loads(line[len("HISTORIES") :])
    _assert_histories_close(hist["False"], hist["True"], rtol=1e-4)
    assert "ALLREDUCE True" in proc.stdout


def test_data_parallel_rejects_indivisible_batch(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    script = _DP_SCRIPT.split("print(")[0].replace("(False, True)", "(True,)")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path),
            *TINY[:2],
            "trainer.batch_size=60",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "batch_size=60 must be divisible by the number of devices (8)" in proc.stderr


def test_remat_gives_the_same_gradients_as_plain_bp():
    import jax
    import jax.numpy as jnp

    from bp_alternatives.model import init_params, mlp
    from bp_alternatives.model.losses import get_loss
    from bp_alternatives.rules import Batch, bp

    with jax.enable_x64(True):
        model = mlp((7,), 3, hidden=(11, 5, 9), activation="gelu")
        params = jax.tree_util.tree_map(
            lambda a: a.astype(jnp.float64), init_params(model, jax.random.PRNGKey(0))
        )
        x = jax.random.normal(jax.random.PRNGKey(1), (6, 7), jnp.float64)
        batch = Batch(x, jnp.array([0, 1, 2, 0, 1, 2]))
        loss = get_loss("cross_entropy")
        plain, _, m1 = jax.jit(bp(model, loss).update)(params, (), batch, None)
        remat_rule = bp(model, loss, remat=True)
        remat, _, m2 = jax.jit(remat_rule.update)(params, (), batch, None)
        for a, b in zip(
            jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(remat)
        ):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        assert float(m1["loss"]) == float(m2["loss"])
        # and the remat program really recomputes: its jaxpr holds checkpoint calls
        jaxpr = str(jax.make_jaxpr(remat_rule.update)(params, (), batch, None))
        assert "checkpoint" in jaxpr or "remat" in jaxpr


_CACHE_SCRIPT = """
import collections, json, os, sys
import jax
from tests.conftest import compose_cfg
from bp_alternatives.experiment import run
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
jobs = []
for seed in (0, 1):  # two jobs of a sweep: same shapes, another seed
    events.clear()
    cfg = compose_cfg(["model.hidden=[16]", "trainer.epochs=1", f"seed={seed}",
                       f"trainer.compilation_cache_dir={sys.argv[1]}"])
    run(cfg, out_dir=os.path.join(sys.argv[2], f"seed={seed}"))
    jobs.append({k.rsplit("/", 1)[1]: v for k, v in events.items()})
print("EVENTS" + json.dumps(jobs))
"""


def test_second_job_of_a_sweep_compiles_nothing(tmp_path):
    """trainer.compilation_cache_dir: the first job fills JAX's persistent cache, the
    second (same shapes, another seed) finds every program there -- no cache miss.
    In a subprocess: the cache directory is process-wide JAX configuration."""
    proc = subprocess.run(
        [sys.executable, "-c", _CACHE_SCRIPT, str(tmp_path / "cache"), str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = json.loads(proc.stdout.split("EVENTS", 1)[1])
    assert first.get("cache_misses", 0) > 0 and first.get("cache_hits", 0) == 0
    assert second.get("cache_misses", 0) == 0 and second.get("cache_hits", 0) > 0
    assert any((tmp_path / "cache").iterdir())
