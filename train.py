"""Thin Hydra shim: `python train.py task=seg backbone=mci2 ...` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from densekit.train import train

    metrics = train(cfg)
    # The sweepers optimise the task's main validation metric.
    return metrics.get(cfg.task.monitor)


if __name__ == "__main__":
    main()
