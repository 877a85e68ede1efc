"""Thin Hydra shim: `python train.py task=seg backbone=mci2 ...` (see conf/train.yaml).

Sweeps: `python train.py -m sweep=optuna` / `-m sweep=grid` (conf/sweep/).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from densekit.sweeps import run_trial

    # Trains and writes <run dir>/result.json. Returns the float of the task's monitored validation metric
    # (cfg.task.monitor), which the optuna sweeper optimises; in a sweep a failed trial is logged and returns
    # NaN (optuna marks it failed) so that the sweep goes on.
    return run_trial(cfg)


if __name__ == "__main__":
    main()
