"""Train one configuration: ``python -m experiments.train rule=fa data=digits seed=0``.

This file is intentionally kept short; the logic is ``bp_alternatives.train.run``,
wrapped by ``bp_alternatives.sweep.run_job`` so that in a sweep (``-m``) a failing job
is recorded in its ``results.json`` and the sweep summary instead of stopping the
others.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bp_alternatives.cli import hydra_cli, user_errors_exit
from bp_alternatives.sweep import run_job


@hydra.main(
    version_base="1.3", config_path="../bp_alternatives/configs", config_name="train"
)
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg, HydraConfig.get())


if __name__ == "__main__":
    hydra_cli(main)()
