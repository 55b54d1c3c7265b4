"""Train one configuration: ``python -m experiments.train rule=fa data=digits seed=0``.

This file is intentionally kept short; the logic is ``bp_alternatives.train.run``.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bp_alternatives.train import run


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    results = run(cfg, out_dir=HydraConfig.get().runtime.output_dir)
    return results["final"].get(cfg.get("optimized_metric", "test_accuracy"))


if __name__ == "__main__":
    main()
