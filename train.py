"""Thin Hydra shim: `python train.py task=seg backbone=mci2 ...` (see conf/train.yaml).

Sweeps: `python train.py -m sweep=optuna` / `-m sweep=grid` (conf/sweep/).
Errors: a wrong config value, a missing file or a data problem is one line on stderr (exit status 2 for config
errors, 1 for data/runtime errors); `HYDRA_FULL_ERROR=1` or `debug=true` shows the traceback (densekit/cli.py).
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from densekit.cli import hydra_entry, report_errors

# conf/train.yaml: hydra.run.dir is output_dir when set (${or_default:...}); registered before Hydra composes
OmegaConf.register_new_resolver("or_default", lambda value, default: default if value is None else value, replace=True)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # Trains and writes <run dir>/result.json. Returns the float of the task's monitored validation metric
    # (cfg.task.monitor), which the optuna sweeper optimises; in a sweep a failed trial is logged and returns
    # the worst value so that the sweep goes on. A user error of a single run is reported here in one line
    # and ends the process with SystemExit, which Hydra does not catch (it would print its own traceback).
    with report_errors():
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode != RunMode.MULTIRUN:
            # typed values first, before torch/Lightning are even imported: a wrong value is one line in about
            # a second (a sweep checks each trial inside run_trial, which records failed trials)
            from densekit.config_schema import validate_config

            validate_config(OmegaConf.to_container(cfg, resolve=True))
        from densekit.sweeps import run_trial

        return run_trial(cfg)


if __name__ == "__main__":
    hydra_entry(main)
