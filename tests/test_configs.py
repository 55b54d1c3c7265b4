"""Every option of every config group composes and builds its object.

The options are read from ``configs/<group>/*.yaml``, so a new file is covered without
editing this test. The file-backed datasets (fashion_mnist, mnist, cifar10) are built
from tiny files in their published formats, written to a temporary data root, so no
download and no real copy is needed. Models, rules and optimizers are run with
``jax.eval_shape`` (traced, not compiled): the shapes and structure of everything a
run builds are checked in seconds; what the numbers are is for the rules' own tests.
"""

from __future__ import annotations

import functools
import gzip
import pickle
import struct
from functools import partial
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from bp_alternatives.config import ConfigError, validate_config
from bp_alternatives.experiment import (
    build,
    build_data,
    build_model,
    build_optimizer,
    build_rule,
    build_writer,
    check_config,
)
from bp_alternatives.model import Model, init_params, mlp, output
from bp_alternatives.rules import Batch, LearningRule, bp
from tests.conftest import CONFIG_DIR, compose_cfg, tree_allclose

GROUPS = ("rule", "model", "data", "optim", "logger", "trainer", "experiment")
BUILT = ("rule", "model", "data", "optim", "logger")  # groups that name a factory


def options(group: str) -> list[str]:
    return sorted(p.stem for p in Path(CONFIG_DIR, group).glob("*.yaml"))


def test_every_group_has_options_and_train_yaml_names_each_group():
    for group in GROUPS:
        assert options(group), f"configs/{group}/ has no options"
    cfg = compose_cfg()
    for group in GROUPS[:-1]:  # experiment: null by default
        assert group in cfg, group


# --- tiny files in the published formats --------------------------------------------


def _idx(a: np.ndarray) -> bytes:
    """An IDX file (unsigned bytes): magic 00 00 08 ndim, big-endian sizes, data."""
    head = struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(np.uint8).tobytes()


def _write_idx_set(d: Path, rng: np.random.RandomState, n_train=30, n_test=10):
    d.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.randint(0, 256, (n, 28, 28))
        y = np.arange(n) % 10
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(x)))
        (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(y)))


def _write_cifar(d: Path, rng: np.random.RandomState, n=6):
    d.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
            b"labels": [int(v) for v in np.arange(n) % 10],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.RandomState(0)
    _write_idx_set(root / "fashion_mnist", rng)
    _write_idx_set(root / "mnist", rng)
    _write_cifar(root / "cifar10" / "cifar-10-batches-py", rng)
    return root


def _local(cfg: DictConfig, root: Path) -> DictConfig:
    """Point every file-backed dataset at ``root``: no download, no checksum (the
    tiny files are not the published ones; the structural checks still run)."""
    local = {"root": str(root), "download": False, "verify": False}
    local["num_samples"] = 200  # mnist1d: a small generated set
    with open_dict(cfg):
        for key, value in local.items():
            if key in cfg.data:
                cfg.data[key] = value
        # the tiny files hold fewer examples than most configs' batch
        cfg.trainer.batch_size = min(int(cfg.trainer.batch_size), 4)
    return cfg


def _build_all(cfg: DictConfig):
    """data -> model -> rule -> optimizer, as a run builds them (checked first, as a
    run checks them); the rule and the optimizer are initialised on the model's
    parameters."""
    check_config(cfg)
    built = build(cfg)
    data, model, rule, optimizer = built.data, built.model, built.rule, built.optimizer
    assert isinstance(model, Model) and model.input_shape == data.input_shape
    per_epoch = len(data.x_train) // int(cfg.trainer.batch_size)  # full batches
    assert dict(built.cfg.run) == {  # at least one step (tiny test sets)
        "steps_per_epoch": max(per_epoch, 1),
        "total_steps": max(per_epoch * int(cfg.trainer.epochs), 1),
    }
    params = jax.eval_shape(partial(init_params, model), jax.random.PRNGKey(0))
    rule_state = jax.eval_shape(rule.init, jax.random.PRNGKey(1), params)
    jax.eval_shape(optimizer.init, params)
    return data, model, rule, rule_state, params


# --- one test per group --------------------------------------------------------------


@pytest.mark.parametrize("name", options("data"))
def test_data_option_builds(name, data_root):
    cfg = _local(compose_cfg([f"data={name}"]), data_root)
    validate_config(cfg)
    data = build_data(cfg)
    assert data.name == name and len(data.x_train) and len(data.x_test)
    assert data.x_train.shape[1:] == tuple(data.input_shape)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32


@pytest.mark.parametrize("name", options("model"))
def test_model_option_builds_and_runs_on_the_data_it_configures(name, data_root):
    """The data config reads the model's ``flatten_input`` / ``input_size``, so each
    model gets inputs of the shape it needs (vectors, images, 32x32 images)."""
    cfg = _local(compose_cfg([f"model={name}", "data=fashion_mnist"]), data_root)
    validate_config(cfg)
    data = build_data(cfg)
    model = build_model(cfg, data)
    params = jax.eval_shape(partial(init_params, model), jax.random.PRNGKey(0))
    out = jax.eval_shape(partial(output, model), params, data.x_train[:2])
    assert out.shape == (2, data.num_classes) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", options("rule"))
def test_rule_option_builds_and_updates(name):
    """Each rule, with its YAML defaults, on a small MLP: an update returns a
    direction shaped like the parameters and a rule state of the same structure."""
    cfg = compose_cfg([f"rule={name}", "model.hidden=[16,16]"])
    data, model, rule, state, params = _build_all(cfg)
    batch = Batch(data.x_train[:8], data.y_train[:8])
    direction, new_state, metrics = jax.eval_shape(
        rule.update, params, state, batch, jax.random.PRNGKey(2)
    )
    assert direction == params  # the same tree of shapes and dtypes
    tree_structure = jax.tree_util.tree_structure
    assert tree_structure(new_state) == tree_structure(state)
    assert "loss" in metrics


@pytest.mark.parametrize("name", options("optim"))
def test_optim_option_builds_and_steps(name):
    cfg = compose_cfg([f"optim={name}"])
    validate_config(cfg)
    optimizer = build_optimizer(cfg, total_steps=10)
    params = {"w": jnp.ones(3)}
    updates, _ = optimizer.update({"w": jnp.ones(3)}, optimizer.init(params), params)
    assert bool(jnp.all(updates["w"] < 0))  # a descent step along the direction


@pytest.mark.parametrize("name", options("logger"))
def test_logger_option_builds_a_writer(name, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # wandb: no process, no files
    cfg = compose_cfg([f"logger={name}"])
    with open_dict(cfg):
        if "mode" in cfg.logger:
            cfg.logger.mode = "disabled"
    writer = build_writer(cfg, str(tmp_path), "run")
    writer.write_scalars(0, {"train/loss": 1.0})
    writer.close()


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_option_composes_and_validates(name):
    cfg = compose_cfg([f"trainer={name}"])
    validate_config(cfg)
    assert cfg.trainer.epochs >= 1 and cfg.trainer.batch_size >= 1


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_builds_every_part(name, data_root):
    """The experiment's own data (tiny local files), model, rule and optimizer."""
    cfg = _local(compose_cfg([f"experiment={name}"]), data_root)
    data, model, rule, _, params = _build_all(cfg)
    assert len(params) == model.num_stages


def test_slurm_launcher_composes_to_an_importable_class():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm"],
            return_hydra_config=True,
        )
    launcher = hydra.utils.get_class(cfg.hydra.launcher._target_)
    assert launcher.__name__ == "SlurmLauncher"


# --- factories from outside the package ----------------------------------------------


@pytest.mark.parametrize("group", BUILT)
def test_every_option_of_a_built_group_names_its_factory(group):
    """Each option builds through its own ``_target_``: no registry lists them."""
    for name in options(group):
        cfg = compose_cfg([f"{group}={name}"])
        assert callable(hydra.utils.get_method(cfg[group]._target_)), (group, name)
    assert compose_cfg(["rule=ff"]).rule._partial_  # built once the model is known


def scaled_bp(
    model: Model, loss, *, factor: float = 1.0, remat: bool = False
) -> LearningRule:
    """A rule from outside the package: backprop's direction times ``factor``
    (``remat``: as ``rule=bp``'s, whose YAML the test's config starts from)."""
    exact = bp(model, loss, remat=remat)

    def update(params, state, batch, key):
        direction, state, metrics = exact.update(params, state, batch, key)
        return jax.tree_util.tree_map(lambda d: factor * d, direction), state, metrics

    return exact._replace(update=update)


def test_a_rule_from_the_users_own_module_plugs_in_by_target():
    target = "rule._target_=tests.test_configs.scaled_bp"
    cfg = compose_cfg([target, "+rule.factor=2.0", "model.hidden=[8]"])
    data, model, rule, _, _ = _build_all(cfg)
    batch = Batch(jnp.asarray(data.x_train[:4]), jnp.asarray(data.y_train[:4]))
    key = jax.random.PRNGKey(0)
    params = init_params(model, key)
    state = rule.init(key, params)
    got, _, _ = rule.update(params, state, batch, key)
    want, _, _ = bp(model, build(cfg).loss).update(params, state, batch, key)
    assert tree_allclose(got, jax.tree_util.tree_map(lambda w: 2 * w, want), 1e-6)
    with pytest.raises(ConfigError, match="rule.factr is not an option of scaled_bp"):
        check_config(compose_cfg([target, "+rule.factr=2.0"]))


def test_run_quantities_reach_any_config_by_interpolation():
    """``${run.steps_per_epoch}`` / ``${run.total_steps}`` resolve to the loaded
    data's step counts (digits: 1437 // 64 = 22 per epoch) wherever they are read."""
    cfg = compose_cfg(["trainer.epochs=3", "+note=${run.total_steps}"])
    assert cfg.run.total_steps is None  # unknown until the data has loaded
    built = build(cfg)
    assert (built.cfg.run.steps_per_epoch, built.cfg.optim.total_steps) == (22, 66)
    assert built.cfg.note == 66


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], ("adam", 1e-3)),  # rule.optimizer: null -> the run's optimizer
        (["+rule.optimizer.lr=0.05"], ("adam", 0.05)),  # the run's family, its own lr
        (["+rule.optimizer={name:sgd,lr:0.2}"], ("sgd", 0.2)),
    ],
)
def test_kolen_pollack_feedback_optimizer_from_rule_optimizer(
    overrides, expected, monkeypatch
):
    """Kolen-Pollack's B is stepped by ``rule.optimizer``: null is the run's
    optimizer; a mapping without ``name`` or ``lr`` takes the run's."""
    import bp_alternatives.optim as optim_module

    calls = []
    real = optim_module.make_optimizer

    @functools.wraps(real)
    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(optim_module, "make_optimizer", spy)
    cfg = compose_cfg(
        ["rule=fa", "rule.feedback=kp", "optim=adam", "optim.lr=1e-3", *overrides]
    )
    validate_config(cfg)
    model = mlp((4,), 3, hidden=(5,))
    build_rule(cfg, model, total_steps=10, steps_per_epoch=5)
    assert calls, "no optimizer was built for B"
    assert calls[-1]["name"] == expected[0]
    assert calls[-1]["lr"] == pytest.approx(expected[1])
