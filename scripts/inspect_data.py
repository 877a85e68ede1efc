"""Fingerprint a dataset and print the settings it suggests, before training on it.

    python scripts/inspect_data.py data=<name> data.root=<path> [task=...] [any train.py override]
        [max_samples=N] [budget=N] [splits=[train,val]] [json=<file>]

The config is train.py's (conf/train.yaml): the same ``data=``/``data.*``/``task=`` overrides build the
same datasets. Per split it prints the sample count, image sizes (min/median/max, H x W or D x H x W),
channels, on-disk dtypes, intensity percentiles (0.5/50/99.5 per channel), class pixel frequencies, the
ignore fraction and the bad samples found (``densekit.data.fingerprint``), then the suggested overrides,
each with its reason, and one ``paste:`` line of them.

Options of this script (not config keys of train.py):
  max_samples  items read per split, spread evenly over it (default 64 for images, 8 for volumes)
  budget       pixels (2D: batch x H x W) or voxels (3D) one training step may hold; default from the
               machine (CUDA: 8 x 512^2 / 2 x 128^3, else 8 x 256^2 / 2 x 64^3)
  splits       which splits to read (default [train, val])
  json         also write the fingerprint and the suggestions to this JSON file

It writes nothing else: no Hydra run directory, no .hydra folder, no log file. Errors are reported as in
train.py (``densekit.cli``): a user error (a missing root, a wrong option or override) is one line on stderr,
exit status 2 for config errors and 1 for data errors; ``HYDRA_FULL_ERROR=1`` or ``debug=true`` shows the
traceback. A split the reader refuses (e.g. 0/255 masks without ``data.label_map``) is not an error here: a
folder layout's raw files are measured instead and the reader's message is shown as a warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig, OmegaConf



class OptionError(ValueError):
    """A wrong option of this script: reported before densekit is imported."""


SCRIPT_DEFAULTS = {"max_samples": None, "budget": None, "splits": ["train", "val"], "json": None}
# Hydra must write nothing: the run directory is the working directory (it exists), no .hydra output
# subdir, no job log file (job_logging=none), no Hydra log configuration.
QUIET_HYDRA = {"hydra.run.dir": ".", "hydra.output_subdir": "null", "hydra/job_logging": "none",
               "hydra/hydra_logging": "none"}
OPTS: dict = dict(SCRIPT_DEFAULTS)


def parse_script_args(argv: list[str]) -> tuple[dict, list[str]]:
    """Split ``argv`` into this script's options (validated) and the Hydra overrides."""
    opts, rest = dict(SCRIPT_DEFAULTS), []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in SCRIPT_DEFAULTS:
            rest.append(arg)
            continue
        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            raise OptionError(f"{key}={value!r}: not a valid value") from None
        if key in ("max_samples", "budget") and parsed is not None and (
                isinstance(parsed, bool) or not isinstance(parsed, int) or parsed < 1):
            raise OptionError(f"{key}={value!r}: expected a positive integer or null")
        if key == "splits":
            parsed = [parsed] if isinstance(parsed, str) else parsed
            if not isinstance(parsed, list) or not parsed or not all(isinstance(s, str) for s in parsed):
                raise OptionError(f"splits={value!r}: expected a list of split names, e.g. [train,val]")
        if key == "json" and parsed is not None:
            parsed = str(value)
        opts[key] = parsed
    given = {a.partition("=")[0].lstrip("+~") for a in rest}
    rest += [f"{k}={v}" for k, v in QUIET_HYDRA.items() if k not in given]
    return opts, rest


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = text.splitlines()
    return lines[0] if len(lines) == 1 else " ".join(t.strip() for t in lines[:3])  # a listing: its head


def inspect(cfg: DictConfig, opts: dict) -> str:
    """Fingerprint the configured data; returns the printed report."""
    # a wrong path is said before the slow imports below (Lightning, the readers)
    root = cfg.data.get("root")
    if root is not None and not Path(str(root)).expanduser().is_dir():
        raise FileNotFoundError(f"data.root not found: {Path(str(root)).expanduser().resolve()} "
                                f"(data={cfg.data.get('name')})")
    import torch

    from densekit.data import build_dataset
    from densekit.errors import ConfigError, DataError
    from densekit.data.fingerprint import (
        CPU_BUDGET, DEFAULT_MAX_SAMPLES, GPU_BUDGET, fingerprint, format_fingerprint, raw_listing,
        source_kind, suggest,
    )
    from densekit.train import split_data_config

    data = OmegaConf.to_container(cfg.data, resolve=True)
    from densekit.config_schema import validate_config

    # the same typed data config as train.py (data.batch_size=0 is refused here too, in one line)
    validate_config({"task": OmegaConf.to_container(cfg.task, resolve=True), "data": data}, groups=("data",))
    name, kwargs, _, _ = split_data_config(data)
    kwargs = {k: v for k, v in kwargs.items() if v != "???"}  # a required value the reader can do without
    task = cfg.task.name
    splits: dict[str, dict] = {}
    for split in opts["splits"]:
        try:
            dataset = build_dataset(name, split, targets=tuple(cfg.task.targets), **kwargs)
        except ConfigError:
            raise  # a wrong config value is the user's to fix, not a finding about the data
        except (ValueError, FileNotFoundError, TypeError) as exc:
            # the reader refused (e.g. 0/255 masks): measure the raw files of a folder layout instead
            reason = _one_line(exc)
            try:
                dataset = raw_listing(name, split, kwargs, reader_error=reason)
            except (ValueError, FileNotFoundError, OSError):
                dataset = None
            if dataset is None or len(dataset) == 0:
                splits[split] = {"error": reason}
                continue
        k = opts["max_samples"] or DEFAULT_MAX_SAMPLES[3 if source_kind(dataset) == "volume" else 2]
        splits[split] = fingerprint(dataset, max_samples=k)
    good = {s: v for s, v in splits.items() if "error" not in v}
    if not good:
        first = next(iter(splits.values()))["error"]
        raise DataError(f"data={name}: no split could be read: {first}")
    fp = {"data": name, "root": root, "task": task, "splits": splits}
    train = good.get("train") or next(iter(good.values()))
    ndim = train["ndim"]
    if (ndim == 3) != (task == "volume"):
        train.setdefault("warnings", []).append(
            f"{ndim}D data with task={task}: use task={'volume' if ndim == 3 else 'seg, depth or flow'}")
    budget = opts["budget"] or (GPU_BUDGET if torch.cuda.is_available() else CPU_BUDGET)[ndim]
    plain = OmegaConf.to_container(cfg, resolve=True)
    suggestions = suggest(fp, data, task, config=plain, budget=budget)
    missing = object()
    for key, s in suggestions.items():
        s["supported"] = OmegaConf.select(cfg, key, default=missing) is not missing
    if opts["json"]:
        path = Path(opts["json"]).expanduser()
        try:
            path.write_text(json.dumps({**fp, "suggestions": suggestions}, indent=2))
        except OSError as exc:
            raise PermissionError(f"json={opts['json']}: cannot write ({exc.strerror or exc})") from None
    read = ", ".join(f"{v['read']} of {v['samples']} {s}" for s, v in good.items())
    head = f"data={name} root={root} task={task}: read {read} samples\n\n"
    return head + format_fingerprint(fp, suggestions)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from densekit.cli import report_errors

    with report_errors():  # a user error: one line on stderr, exit 2 (config) or 1 (data)
        print(inspect(cfg, OPTS), end="")


if __name__ == "__main__":
    try:
        OPTS, sys.argv[1:] = parse_script_args(sys.argv[1:])
    except OptionError as err:  # densekit.cli's format and status for a config error
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    from densekit.cli import hydra_entry

    hydra_entry(main)
