"""Learning-rate schedules through the config: the biotorch set-up's step schedule at
epoch boundaries, the FF codes' linear cool-down, and their config errors."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import optax
import pytest

from bp_alternatives.config import ConfigError
from bp_alternatives.experiment import build, build_optimizer, check_config
from bp_alternatives.optim import make_optimizer, make_schedule
from tests.experiment_helpers import (
    job_cfg,
)

# ------------------------------------------------------------------ step schedule


def test_step_schedule_divides_at_the_epoch_boundaries():
    spe = 843  # Fashion-MNIST: 54000 // 64
    sched = make_schedule(
        1e-3, "step", 100 * spe, decay_epochs=[50, 75], steps_per_epoch=spe
    )
    # count = updates already applied: epoch e (1-based) runs counts (e-1)*spe ...
    got = [float(sched(jnp.int32(c))) for c in (0, 50 * spe - 1, 50 * spe, 75 * spe)]
    assert got == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5], rel=1e-6)
    by_steps = make_schedule(1.0, "step", 10, decay_steps=[3], decay_factor=0.5)
    assert [float(by_steps(jnp.int32(c))) for c in (2, 3, 9)] == [1.0, 0.5, 0.5]


def test_step_schedule_through_the_config(tmp_path):
    """build_optimizer derives steps per epoch from total_steps and trainer.epochs:
    with 2 steps per epoch and 100 epochs, SGD's step is lr until step 100, lr/10
    from 100 (epoch 51) and lr/100 from 150 (epoch 76)."""
    cfg = job_cfg(
        tmp_path,
        "experiment=biotorch_fashion_mnist",
        "optim.momentum=0.0",
        "optim.weight_decay=0.0",
    )
    opt = build_optimizer(cfg, total_steps=2 * 100)
    p = jnp.zeros(())
    state = opt.init(p)
    steps = []
    for _ in range(152):
        u, state = opt.update(jnp.ones(()), state, p)
        steps.append(-float(u))
    assert steps[99] == pytest.approx(1e-3) and steps[100] == pytest.approx(1e-4)
    assert steps[149] == pytest.approx(1e-4) and steps[150] == pytest.approx(1e-5)


def test_linear_cooldown_follows_the_ff_codes_epoch_formula():
    """loeweX's get_linear_cooldown_lr (0-based epoch e, E epochs): lr while
    e <= E // 2, then lr * 2 * (1 + E - e) / E."""
    spe, n_epochs = 3, 10
    sched = make_schedule(2.0, "linear_cooldown", spe * n_epochs, steps_per_epoch=spe)
    per_epoch = [
        float(sched(jnp.int32(e * spe + r))) for e in range(10) for r in (0, 2)
    ]
    want = [2.0 if e <= 5 else 2.0 * 2 * (1 + 10 - e) / 10 for e in range(10)]
    assert per_epoch == pytest.approx([w for w in want for _ in (0, 2)], rel=1e-6)
    assert want[6:] == pytest.approx([2.0, 1.6, 1.2, 0.8])
    with pytest.raises(ValueError, match="steps per epoch"):
        make_optimizer("sgd", 0.1, total_steps=10, schedule="linear_cooldown")


def _sgd_lrs(opt, n):
    p = jnp.zeros(())
    st = opt.init(p)
    lrs = []
    for _ in range(n):
        u, st = opt.update(jnp.ones(()), st, p)
        lrs.append(-float(u))
    return lrs


def test_linear_cooldown_reaches_the_ff_readout_too(tmp_path, monkeypatch):
    """optim.schedule and rule.optimizer.schedule=linear_cooldown (ff: the
    read-out's) both span the run's epochs: the read-out's optimizer is built with
    the run's step counts (${run.*}), which build() fills from the loaded data."""
    import bp_alternatives.optim as optim_module

    built_opts = []

    @functools.wraps(make_optimizer)  # the same signature: `name` is passed on
    def spy(*args, **kwargs):
        built_opts.append((kwargs, make_optimizer(*args, **kwargs)))
        return built_opts[-1][1]

    monkeypatch.setattr(optim_module, "make_optimizer", spy)
    cfg = job_cfg(
        tmp_path,
        "rule=ff",
        "model.activation=relu",
        "optim=sgd",
        "optim.schedule=linear_cooldown",
        "trainer.epochs=10",
        "+rule.optimizer.schedule=linear_cooldown",
        "rule.optimizer.momentum=0.0",
        "rule.optimizer.weight_decay=0.0",
    )
    check_config(cfg)
    built_opts.clear()
    built = build(cfg)
    steps = len(built.data.x_train) // int(cfg.trainer.batch_size)
    n = 10 * steps
    rule_lr = float(cfg.rule.optimizer.lr)
    readout = [o for kw, o in built_opts if kw.get("lr") == rule_lr]
    assert readout, "the read-out's optimizer was not built by make_optimizer"
    for opt, lr in ((built.optimizer, float(cfg.optim.lr)), (readout[0], rule_lr)):
        lrs = _sgd_lrs(opt, n)
        # E=10 (0-based e): lr through epoch 6 (factor 2*5/10 = 1 at e=6), then
        # 0.8, 0.6, 0.4 at the starts of epochs 7, 8, 9
        assert lrs[7 * steps - 1] == pytest.approx(lr)
        assert [lrs[e * steps] / lr for e in (7, 8, 9)] == pytest.approx(
            [0.8, 0.6, 0.4]
        )


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["optim.decay_epochs=null"], "exactly one of optim.decay_epochs"),
        (["optim.decay_steps=[10]"], "exactly one of optim.decay_epochs"),
        (["optim.decay_epochs=[75,50]"], "strictly increasing"),
        (["optim.decay_factor=0"], r"decay_factor=0(\.0)? is outside its valid"),
    ],
)
def test_step_schedule_config_errors(tmp_path, overrides, match):
    cfg = job_cfg(tmp_path, "experiment=biotorch_fashion_mnist", *overrides)
    with pytest.raises(ConfigError, match=match):
        check_config(cfg)


def test_step_schedule_needs_steps_per_epoch_for_epochs():
    with pytest.raises(ValueError, match="steps per epoch"):
        make_optimizer("sgd", 0.1, total_steps=10, schedule="step", decay_epochs=[1])
    assert isinstance(
        make_optimizer("sgd", 0.1, total_steps=10, schedule="step", decay_steps=[5]),
        optax.GradientTransformation,
    )
