"""Several search trials as one vmapped program: runs that differ only in the
learning rate ``optim.lr`` train together, like seeds (``trainer.seeds``).

Every optimizer of :func:`bp_alternatives.optim.make_optimizer` is linear in its
learning rate: with any schedule, the update is ``lr * u(t)`` where ``u`` does not
depend on ``lr`` (sgd, adam, adamw: optax multiplies the whole step, decoupled decay
included, by the scheduled rate; L2 weight decay is added before the scaling). So the
members share one optimizer built at ``lr = 1`` followed by
``optax.inject_hyperparams(optax.scale)``, whose ``step_size`` lives in the
optimizer state and so carries each member's own rate along the member axis. Each
member's numbers equal its run by :func:`bp_alternatives.experiment.run` to float
rounding (``tests/test_protocol_vmap.py``); its ``results.json`` is the same record.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig, OmegaConf, open_dict

from bp_alternatives import results as results_io
from bp_alternatives.config import with_run
from bp_alternatives.experiment import (
    _enable_compilation_cache,
    _results,
    build,
    build_optimizer,
    check_config,
    run_steps,
)
from bp_alternatives.progress import log_to
from bp_alternatives.rundir import finished
from bp_alternatives.train import fit_seeds

VMAPPABLE = ("optim.lr",)  # the config keys members may differ in


def lr_only(cfg: DictConfig, keys: Sequence[str]) -> bool:
    """Whether runs of ``cfg`` that differ in ``keys`` can share one program: only
    ``optim.lr`` differs, and the rule's own optimizer (``rule.optimizer``, if it
    has one) does not take the run's rate (a null ``rule.optimizer`` or one without
    ``lr`` would change with ``optim.lr``)."""
    if not keys or set(keys) - set(VMAPPABLE):
        return False
    if "optimizer" not in cfg.rule:
        return True
    own = cfg.rule.optimizer
    return own is not None and own.get("lr") is not None


def _scaled(cfg: DictConfig, total_steps: int):
    """``cfg``'s optimizer at rate 1 followed by an injected ``optax.scale``."""
    unit = cfg.copy()
    with open_dict(unit):
        unit.optim.lr = 1.0
    return optax.chain(
        build_optimizer(unit, total_steps),
        optax.inject_hyperparams(optax.scale)(step_size=1.0),
    )


def _with_rates(rates: jax.Array):
    """Set the injected ``step_size`` of a member-batched state to ``rates``."""

    def prepare(state):
        base, injected = state.opt_state
        hp = dict(injected.hyperparams) | {"step_size": rates}
        return state._replace(opt_state=(base, injected._replace(hyperparams=hp)))

    return prepare


def run_members(cfgs: Sequence[DictConfig], out_dirs: Sequence[str]) -> list[dict]:
    """Train the runs ``cfgs`` (one config each, equal but for ``optim.lr``) in one
    vmapped program and write each one's ``results.json`` to its ``out_dirs`` entry;
    return the results dicts in order. Finished members are read, not retrained.
    Raises ValueError when the configs differ in anything but ``optim.lr``."""
    lrs = [float(c.optim.lr) for c in cfgs]
    ref = _without_lr(cfgs[0])
    if any(_without_lr(c) != ref for c in cfgs[1:]):
        raise ValueError("run_members: the configs must differ in optim.lr only")
    done = [
        finished(os.path.join(d, "results.json"), c) for c, d in zip(cfgs, out_dirs)
    ]
    todo = [i for i, r in enumerate(done) if r is None]
    if not todo:
        return done
    start = dt.datetime.now(dt.timezone.utc)
    for c in cfgs:
        check_config(c)
    _enable_compilation_cache(cfgs[0].trainer.get("compilation_cache_dir"))
    b = build(cfgs[todo[0]])
    total_steps, per_epoch = run_steps(b.cfg, b.data)
    t = b.cfg.trainer
    rates = jnp.asarray([lrs[i] for i in todo], jnp.float32)
    log_dir = os.path.commonpath([os.path.abspath(out_dirs[i]) for i in todo])
    os.makedirs(log_dir, exist_ok=True)
    with log_to(os.path.join(log_dir, "train.log")):
        outs = fit_seeds(
            b.model,
            b.loss,
            b.rule,
            _scaled(b.cfg, total_steps),
            b.data,
            epochs=int(t.epochs),
            batch_size=int(t.batch_size),
            keys=[jax.random.PRNGKey(int(cfgs[i].seed)) for i in todo],
            probe_size=int(t.probe_size),
            eval_chunk=int(t.eval_chunk),
            progress=bool(t.progress),
            lr_schedule=b.schedule,
            prepare_state=_with_rates(rates),
        )
    for i, out in zip(todo, outs):
        for entry in out["history"]:  # the schedule was built at member todo[0]'s rate
            if "lr" in entry:
                entry["lr"] *= lrs[i] / lrs[todo[0]]
        c = with_run(cfgs[i], total_steps, per_epoch)
        record = _results(b, c, out, start)
        os.makedirs(out_dirs[i], exist_ok=True)
        results_io.write(os.path.join(out_dirs[i], results_io.FILENAME), record)
        done[i] = record.to_dict()
    return done


def _without_lr(cfg: DictConfig) -> Any:
    c = OmegaConf.to_container(cfg, resolve=True)
    c["optim"].pop("lr", None)
    c.pop("protocol", None)  # the search's record of the point
    return c
