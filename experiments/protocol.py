"""The fair-comparison protocol, one command per set-up:

    python -m experiments.protocol experiment=protocol_digits

Per rule: an Optuna search on the validation split, the best point chosen on
validation, then that point over several seeds on test; the table with confidence
intervals and Welch tests, and the figures, in ``<run dir>/report/``. Re-running the
same command resumes a killed search and retrains nothing that finished. This file is
intentionally kept short; the logic is ``bp_alternatives.protocol``.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bp_alternatives.cli import hydra_cli, user_errors_exit
from bp_alternatives.protocol import run_protocol


@hydra.main(
    version_base="1.3", config_path="pkg://bp_alternatives.configs", config_name="train"
)
@user_errors_exit
def protocol_main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    # every rule composed with the command line's overrides, its own rule= last
    overrides = [o for o in hc.overrides.task if not o.startswith("rule=")]

    def compose(rule: str) -> DictConfig:
        return hydra.compose(
            config_name="train", overrides=[*overrides, f"rule={rule}"]
        )

    run_protocol(cfg, hc.runtime.output_dir, compose)


main = hydra_cli(protocol_main)

if __name__ == "__main__":
    main()
