"""Fingerprint a dataset and print the settings it suggests, before training on it.

    python scripts/inspect_data.py data=<name> data.root=<path> [task=...] [any train.py override]
        [max_samples=N] [budget=N] [splits=[train,val]] [json=<file>]

The config is conf/inspect.yaml: train.py's (conf/train.yaml), so the same ``data=``/``data.*``/``task=``
overrides build the same datasets, plus this script's options (documented there). Per split it prints the
sample count, image sizes (min/median/max, H x W or D x H x W), channels, on-disk dtypes, intensity
percentiles (0.5/50/99.5 per channel), class pixel frequencies, the ignore fraction and the bad samples
found (``densekit.data.fingerprint``), then the suggested overrides, each with its reason, and one
``paste:`` line of them.

It writes nothing else: no Hydra run directory, no .hydra folder, no log file. Errors are reported as in
train.py (``densekit.cli``): a user error (a missing root, a wrong option or override) is one line on stderr,
exit status 2 for config errors and 1 for data errors; ``HYDRA_FULL_ERROR=1`` or ``debug=true`` shows the
traceback. A split the reader refuses (e.g. 0/255 masks without ``data.label_map``) is not an error here: a
folder layout's raw files are measured instead and the reader's message is shown as a warning.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from densekit.cli import hydra_entry, report_errors


def inspect(cfg: DictConfig) -> str:
    """The report for the composed config."""
    from densekit.builder import split_data_config
    from densekit.config_schema import validate_config
    from densekit.data.fingerprint import OPTIONS, check_options, check_root, inspect_data

    config = OmegaConf.to_container(cfg, resolve=True)
    options = check_options({key: config.get(key) for key in OPTIONS})
    data = config["data"]
    check_root(data)  # a missing data.root is one line naming it, before any reader is built
    # the same typed data config as train.py (data.batch_size=0 is refused here too, in one line)
    validate_config({"task": config["task"], "data": data}, groups=("data",))
    name, kwargs, _, _ = split_data_config(data)
    return inspect_data(config, name, kwargs, options)


@hydra.main(version_base="1.3", config_path="../conf", config_name="inspect")
def main(cfg: DictConfig) -> None:
    with report_errors():  # a user error: one line on stderr, exit 2 (config) or 1 (data)
        print(inspect(cfg), end="")


if __name__ == "__main__":
    hydra_entry(main)
