"""Errors a user causes on the command line: one block, exit status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # eleven command-line runs side by side (~1-2 min)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# overrides -> lines the block must contain (what is wrong, the match, the fix)
CASES = {
    "lr": (["optim.lr=-1"], ["optim.lr must be positive, got -1.0", "fix: "]),
    "activation": (
        ["model.activation=gelu2"],
        [
            "model.activation='gelu2'",
            "did you mean 'gelu'?",
            "fix: model.activation=gelu",
        ],
    ),
    "dfa_no_hidden": (
        ["rule=dfa", "model.hidden=[]"],
        ["rule=dfa needs at least one hidden stage", "fix: ", "model.hidden=[256]"],
    ),
    # MNIST missing (empty root, no download): the rule's option fails first
    "feedback": (
        ["rule=fa", "rule.feedback=randm", "data=mnist", "data.download=false"],
        [
            "rule.feedback 'randm'",
            "did you mean 'random'?",
            "fix: rule.feedback=random",
        ],
    ),
    "feedback_no_match": (
        ["rule=dfa", "rule.feedback=randm"],
        [
            "rule.feedback 'randm' for rule=dfa",
            "fix: a valid value, e.g. rule.feedback=",
        ],
    ),
    "rule_name": (
        ["rule=bpp"],
        ["rule=bpp is not an option of 'rule'", "did you mean 'bp'?", "fix: rule=bp"],
    ),
    "schema": (
        ["model=schema_model_mlp"],
        ["model=schema_model_mlp is not an option", "valid: cnn, lenet, mlp,"],
    ),
    "key": (["optim.lrr=0.1"], ["optim.lrr is not a key", "did you mean optim.lr?"]),
    "rule_option": (
        ["rule=fa", "+rule.feedbak=usf"],
        ["rule.feedbak is not an option of fa", "did you mean rule.feedback?"],
    ),
    "type": (["trainer.epochs=ten"], ["trainer.epochs: Value 'ten'", "fix: "]),
    "missing_data": (
        ["data=mnist", "data.download=false"],
        ["mnist: missing file(s)", "To provide them", "data.root"],
    ),
}


def _start(
    overrides: list[str], tmp: str, *flags: str, module: str = "experiments.train"
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO, "BPA_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    args = [*overrides, *flags, f"hydra.run.dir={tmp}/run"]
    if "data=mnist" in overrides:
        args.append(f"data.root={tmp}/data")  # empty: no MNIST files
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case's (exit status, stdout, stderr), the processes run side by side."""
    procs = {}
    for name, (overrides, _) in CASES.items():
        tmp = str(tmp_path_factory.mktemp(name))
        procs[name] = _start(overrides, tmp)
    tmp = str(tmp_path_factory.mktemp("verbose"))
    procs["verbose"] = _start(["optim.lr=-1"], tmp, "--verbose")
    procs["help"] = _start([], str(tmp_path_factory.mktemp("help")), "--help")
    protocol = "experiments.protocol"
    tmp = str(tmp_path_factory.mktemp("protocol_help"))
    procs["protocol_help"] = _start([], tmp, "--help", module=protocol)
    tmp = str(tmp_path_factory.mktemp("protocol_none"))
    procs["protocol_none"] = _start([], tmp, module=protocol)
    # generous: twelve interpreters side by side on a shared machine
    outs = {n: p.communicate(timeout=900) for n, p in procs.items()}
    return {n: (procs[n].returncode, *outs[n]) for n in procs}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_is_one_block_with_exit_2(outcomes, case):
    code, out, err = outcomes[case]
    assert code == 2, err[-3000:]
    assert "Traceback" not in err + out
    assert "tpu" not in (err + out).lower()  # jax's backend probe stays quiet
    assert err.startswith("error: "), err
    assert err.rstrip().endswith("--verbose or HYDRA_FULL_ERROR=1)")
    for part in CASES[case][1]:
        assert part in err, (part, err)


def test_verbose_shows_the_traceback(outcomes):
    code, _, err = outcomes["verbose"]
    assert code == 1 and "Traceback" in err and "ConfigError" in err


def test_schemas_are_not_listed_as_options(outcomes):
    code, out, _ = outcomes["help"]
    assert code == 0
    configs = os.path.join(REPO, "bp_alternatives", "configs")
    for group in ("model", "optim", "rule"):
        names = sorted(f[:-5] for f in os.listdir(os.path.join(configs, group)))
        assert f"\n{group}: {', '.join(names)}\n" in out, group
    assert "schema" not in out  # neither a group nor an option


def test_the_protocol_command_runs_over_the_packaged_configs(outcomes):
    code, out, err = outcomes["protocol_help"]
    assert code == 0, err[-3000:]
    assert "protocol_digits" in out and "schema" not in out
    code, _, err = outcomes["protocol_none"]  # no experiment with a protocol section
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert err.startswith("error: no protocol section in the config"), err
