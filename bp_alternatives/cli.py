"""Command-line entry points (``bpa-train``, ``bpa-protocol``, ``bpa-compare``) and
their error handling.

``bpa-train`` (= ``python -m bp_alternatives.train`` = ``python -m experiments.train``)
is :func:`train`: the ``@hydra.main`` :func:`train_main` over the configs shipped in
the package (``bp_alternatives/configs``), wrapped so that errors a user causes print
one block and exit with status 2. ``bpa-protocol`` (= ``python -m
experiments.protocol``) is :func:`protocol`, the fair-comparison protocol over the
same configs. ``bpa-compare`` is :func:`compare`.

``hydra_cli(main)`` wraps a ``@hydra.main`` function. A bad config value, an unknown
option or key, an override that does not parse or missing data files end in::

    error: model.activation='gelu2'; valid activations: [...]; did you mean 'gelu'?
      fix: model.activation=gelu
    (the full traceback: --verbose or HYDRA_FULL_ERROR=1)

on stderr, exit status 2 and no traceback. Any other exception is a bug and keeps its
traceback (exit status 1). ``--verbose`` (removed before Hydra parses the arguments)
or ``HYDRA_FULL_ERROR=1`` shows the full traceback of user errors too.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from bp_alternatives.compare import main as compare_main
from bp_alternatives.config import ConfigError, closest
from bp_alternatives.data import CorruptFileError, DataError, DatasetNotFoundError
from bp_alternatives.guard import writable_error
from bp_alternatives.protocol import ProtocolError, run_protocol
from bp_alternatives.sweep import abort_sweep, run_job

USER_ERRORS = (
    ConfigError,
    ConfigCompositionException,
    OverrideParseException,
    DatasetNotFoundError,
    CorruptFileError,
    DataError,
)
EXIT_USER_ERROR = 2
CONFIG_PATH = "configs"  # Hydra's config_path, relative to this package


def _composition(e: ConfigCompositionException) -> tuple[str, str | None]:
    """What is wrong and the fix, for an error Hydra raised while composing."""
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options:
        group, _, name = e.missing_cfg_file.rpartition("/")
        options = sorted(e.options)
        match = closest(name, options)
        hint = f"; did you mean {match!r}?" if match else ""
        what = f"{group}={name} is not an option of '{group}'"
        fix = f"{group}={match}" if match else f"one of the valid {group} options"
        return f"{what}; valid: {', '.join(options)}{hint}", fix
    cause = e.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
        parent, _, key = cause.full_key.rpartition(".")
        fields = _fields(cause.object_type)
        match = closest(key, fields) if fields else None
        what = f"{cause.full_key} is not a key of {parent or 'the config'}"
        if match:
            return f"{what}; did you mean {parent}.{match}?", f"{parent}.{match}=..."
        return f"{what}; valid keys: {fields}", f"+{cause.full_key}=... adds a key"
    if isinstance(cause, ValidationError) and cause.full_key:
        first = str(cause.msg).splitlines()[0]
        fix = f"give {cause.full_key} a value of its type"
        return f"{cause.full_key}: {first}", fix
    if isinstance(cause, OmegaConfBaseException):
        return f"{e}\n{str(cause.msg).splitlines()[0]}", None
    return str(e), None


def _fields(object_type: Any) -> list[str]:
    if dataclasses.is_dataclass(object_type):
        return sorted(f.name for f in dataclasses.fields(object_type))
    return []


def error_block(e: BaseException) -> str:
    """The block printed for a user error: what is wrong, then the fix."""
    fix = getattr(e, "fix", None)
    if isinstance(e, OverrideParseException):
        what = f"cannot parse the override {e.override!r}: {e.message}"
    elif isinstance(e, ConfigCompositionException):
        what, fix = _composition(e)
    else:
        what = str(e)
    lines = [f"error: {what}"]
    if fix:
        lines.append(f"  fix: {fix}")
    lines.append("(the full traceback: --verbose or HYDRA_FULL_ERROR=1)")
    return "\n".join(lines)


_verbose = False  # set by hydra_cli: --verbose or HYDRA_FULL_ERROR=1


def _exit(e: BaseException) -> None:
    print(error_block(e), file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def user_errors_exit(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorate a Hydra task function (under ``@hydra.main``): a user error it raises
    prints its block and exits 2, before Hydra prints its own line about the job."""

    @functools.wraps(task)
    def wrapped(cfg: Any) -> Any:
        try:
            return task(cfg)
        except USER_ERRORS as e:
            if _verbose:
                raise
            _exit(e)

    return wrapped


def hydra_cli(main: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a ``@hydra.main`` function: user errors as one block, exit status 2."""

    def cli() -> Any:
        global _verbose
        # jax's "Unable to initialize backend 'tpu'" INFO line is noise on CPU/GPU
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        if "--verbose" in sys.argv:
            sys.argv.remove("--verbose")
            os.environ["HYDRA_FULL_ERROR"] = "1"
        _verbose = os.environ.get("HYDRA_FULL_ERROR") == "1"
        if _verbose:
            return main()
        # Hydra re-raises (rather than prints) a composition error with this set
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return main()
        except USER_ERRORS as e:
            abort_sweep(e)  # a sweep cut short: its summary first
            _exit(e)
        except Exception as e:
            aborted = abort_sweep(e)  # a sweep the launcher gave up: its summary
            if isinstance(e, OSError) and (user := writable_error(e)):
                _exit(user)  # a read-only or full disk under Hydra's own files
            if aborted:
                print(
                    "(the full traceback: --verbose or HYDRA_FULL_ERROR=1)",
                    file=sys.stderr,
                )
                sys.exit(1)
            raise
        finally:
            os.environ.pop("HYDRA_FULL_ERROR", None)

    return cli


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@user_errors_exit
def train_main(cfg: Any) -> float | None:
    """One run, or one job of a sweep (``-m``): :func:`.sweep.run_job`."""
    from hydra.core.hydra_config import HydraConfig

    return run_job(cfg, HydraConfig.get())


train = hydra_cli(train_main)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@user_errors_exit
def protocol_main(cfg: Any) -> None:
    """The protocol of ``cfg.protocol`` (:func:`.protocol.run_protocol`): every rule
    composed with the command line's overrides, its own ``rule=`` last."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith("rule=")]

    def compose(rule: str) -> Any:
        return hydra.compose(
            config_name="train", overrides=[*overrides, f"rule={rule}"]
        )

    try:
        run_protocol(cfg, hc.runtime.output_dir, compose)
    except ProtocolError as e:  # a malformed protocol section: the user's to fix
        raise ConfigError(str(e)) from e


protocol = hydra_cli(protocol_main)


def compare() -> None:
    """``bpa-compare DIR [...]``: :func:`bp_alternatives.compare.main`."""
    sys.exit(compare_main())
