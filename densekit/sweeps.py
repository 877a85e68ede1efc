"""Hydra sweeps (``python train.py -m sweep=optuna|grid``): one trial = one ``densekit.train.train`` run.

Part of the composition root (with ``densekit.train``): it knows Hydra (its runtime config, override
parser and callbacks); models, data and tasks do not.

- ``run_trial(cfg)``: what the ``train.py`` shim calls. Trains, writes ``<run dir>/result.json`` (overrides,
  status, objective, all final metrics, the best checkpoint (null when no monitored validation chose one), the
  last checkpoint, which checkpoint the metrics come from and why, the run's warnings and notes, the run
  directory's size, wall time, git commit) for every trial, failed ones included (an earlier attempt's
  result.json / error.txt are moved to ``previous-<time>/`` first), and returns the objective: the float of
  ``cfg.task.monitor``. In a multirun a failing trial is logged with its traceback (``<trial>/error.txt``
  and the trial's Hydra log), recorded as status=failed in result.json, and returns the worst value for the
  sweep's direction (-inf when maximising, +inf when minimising) so that the sweep goes on. Not NaN:
  hydra-optuna-sweeper 1.2/1.3 crashes on a NaN return (optuna's tell() rejects NaN, and the plugin's
  fallback tell(FAIL, values=[nan]) raises again), so optuna sees the failed trial as complete with the
  worst value, which TPE simply ranks last. The basic (grid) sweeper ignores return values. A single run
  re-raises.
- ``CheckSweepParams``: a Hydra callback (registered by conf/sweep/*.yaml) that checks, before any trial is
  composed or trained, that every swept key exists in the config; a typo such as ``optim.lrr`` fails with
  the valid keys of ``optim`` instead of a composition error in the first trial.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import time
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"


def _hydra_job() -> tuple[bool, list[str], int | None]:
    """(is this a multirun trial, the trial's overrides, the trial number) from Hydra's runtime config."""
    if not HydraConfig.initialized():
        return False, [], None
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return multirun, list(hc.overrides.task), (int(hc.job.num) if multirun else None)


def worst_value(direction: str | None) -> float:
    """The objective of a failed trial: -inf when maximising, +inf when minimising (NaN if unknown)."""
    return {"maximize": -math.inf, "minimize": math.inf}.get(str(direction).lower(), math.nan)


def _direction(cfg: DictConfig) -> str | None:
    """``task.sweep_direction``: what conf/sweep/optuna.yaml gives the sweeper as ``direction``."""
    return cfg.task.get("sweep_direction")


def objective(metrics: dict[str, float], monitor: str) -> float:
    """The trial's objective: ``metrics[monitor]`` as a float, NaN when it is missing or not finite."""
    value = metrics.get(monitor)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return value if math.isfinite(value) else float("nan")


def _best_checkpoint(run_dir: Path) -> str | None:
    """The run's best checkpoint (``checkpoints/best-*.ckpt``, newest) or None: never last.ckpt, which is
    not chosen by any validation (``last_checkpoint`` names it)."""
    ckpts = sorted((run_dir / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(ckpts[-1]) if ckpts else None


def _last_checkpoint(run_dir: Path) -> str | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def _run_facts(run_dir: Path, summary: dict) -> dict:
    """The result.json fields that ``densekit.train.train`` leaves in ``last_run`` (checkpoints found on disk
    when another ``train_fn`` ran)."""
    facts = {
        "best_checkpoint": summary.get("best_checkpoint", _best_checkpoint(run_dir)),
        "last_checkpoint": summary.get("last_checkpoint", _last_checkpoint(run_dir)),
        "metrics_checkpoint": summary.get("metrics_checkpoint"),
        "metrics_from": summary.get("metrics_from"),
        "resumed_from": summary.get("resumed_from"),
        "steps_trained": summary.get("steps_trained"),
        "size_bytes": summary.get("size_bytes"),
        "warnings": list(summary.get("warnings") or []),
        "notes": list(summary.get("notes") or []),
    }
    return facts


def write_result(run_dir: Path, record: dict) -> Path:
    path = Path(run_dir) / RESULT_FILE
    # NaN and +-inf are not JSON: a missing or non-finite objective (status no_objective) is written as null
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    path.write_text(json.dumps(clean, indent=2, sort_keys=False) + "\n")
    return path


def run_trial(cfg: DictConfig, train_fn=None) -> float:
    """Train per ``cfg`` (``train_fn`` defaults to ``densekit.train.train``), write ``result.json`` and return
    the objective: ``cfg.task.monitor``'s final value; the direction's worst value (``worst_value``) when the
    run failed in a sweep or the metric is missing."""
    from . import train as train_module
    from .runinfo import git_info
    from .runs import RECORD_FILES, RunDirInUse, set_aside
    from .train import output_dir, train

    train_fn = train_fn or train
    multirun, overrides, trial = _hydra_job()
    run_dir = output_dir(cfg)
    monitor = str(cfg.task.monitor)
    record: dict = {
        "trial": trial,
        "status": "running",
        "monitor": monitor,
        "direction": _direction(cfg),
        "objective": None,
        "overrides": overrides,
        "metrics": {},
        "best_checkpoint": None,
        "wall_time_s": None,
        "error": None,
        "run_dir": str(run_dir),
        "git_commit": git_info()["commit"],
    }
    start = time.perf_counter()
    train_module.last_run.clear()  # train() fills it; another train_fn leaves it empty
    try:
        metrics = train_fn(cfg)
    except RunDirInUse as err:
        # refused before anything was written: the directory and its records belong to the previous run
        if not multirun:
            raise
        log.error("trial %s refused: %s", trial, err)
        return worst_value(record["direction"])
    except Exception as err:
        text = traceback.format_exc()
        set_aside(run_dir, RECORD_FILES)  # an earlier attempt's records (if train() did not move them)
        (run_dir / ERROR_FILE).write_text(text)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        record.update(
            status="failed",
            error=f"{type(err).__name__}: {first}",
            wall_time_s=round(time.perf_counter() - start, 3),
            **_run_facts(run_dir, train_module.last_run),
        )
        write_result(run_dir, record)
        if not multirun:
            raise
        log.error(
            "trial %s failed (%s); the sweep goes on. Traceback, also in %s:\n%s",
            trial,
            record["error"],
            run_dir / ERROR_FILE,
            text,
        )
        return worst_value(record["direction"])
    except BaseException:  # Ctrl-C / TrainingInterrupted: record it, then stop the whole sweep
        set_aside(run_dir, RECORD_FILES)
        record.update(
            status="interrupted",
            wall_time_s=round(time.perf_counter() - start, 3),
            **_run_facts(run_dir, train_module.last_run),
        )
        write_result(run_dir, record)
        raise
    set_aside(run_dir, RECORD_FILES)  # a no-op after train(), which moved an earlier attempt's records aside
    value = objective(metrics, monitor)
    record.update(
        status="ok" if math.isfinite(value) else "no_objective",
        objective=value,
        metrics={k: float(v) for k, v in metrics.items()},
        wall_time_s=round(time.perf_counter() - start, 3),
        **_run_facts(run_dir, train_module.last_run),
    )
    if not math.isfinite(value):
        record["error"] = f"the monitored metric {monitor} is missing or not finite in the final metrics"
        log.error("trial %s: %s (got keys %s)", trial, record["error"], sorted(metrics))
    write_result(run_dir, record)
    return value if math.isfinite(value) else worst_value(record["direction"])


# ---- optuna: a head-width search that follows the head ------------------------------------------------

HEAD_WIDTH_FACTORS = (0.5, 1.0, 2.0)


def _scale_width(value, factor: float):
    """A channel count (or list of them) times ``factor``, rounded to a multiple of 8 (at least 8)."""
    if isinstance(value, (list, tuple)):
        return [_scale_width(v, factor) for v in value]
    return max(8, int(round(value * factor / 8)) * 8)


def head_width_keys(name: str | None) -> tuple[str, ...]:
    """The channel-width keys of head ``name``'s config: its registered ``width_keys`` fact. Heads without
    one (lightm, revunet3d: their widths come from the backbone) and unknown names (the trial itself reports
    those) give none."""
    from .models import HEADS

    return tuple(HEADS.fact(name, "width_keys", ())) if name in HEADS else ()


def head_width_choices(head: dict) -> dict[str, list]:
    """``{"head.<key>": [w/2, w, 2w]}`` for each width key of ``head`` (a plain head config); lists are
    scaled entry by entry and given as override strings such as ``"[128,64,32,16]"``."""
    out = {}
    for key in head_width_keys(head.get("name")):
        value = head.get(key)
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue  # e.g. fine_estimator_channels: null (= the coarse levels' widths), context_channels: []
        choices = [_scale_width(value, f) for f in HEAD_WIDTH_FACTORS]
        if isinstance(value, (list, tuple)):
            choices = ["[" + ",".join(str(c) for c in choice) + "]" for choice in choices]
        out[f"head.{key}"] = list(dict.fromkeys(choices))  # small widths can collide after rounding
    return out


def train_size_choices(data: dict) -> dict[str, list[str]]:
    """``{"data.<key>": [...]}``: the training crop/size of a plain data config at a few scales, as override
    strings. The key is the one that sets the training input size: ``augment.crop`` (real 2D datasets and
    synthetic flow: only smaller crops, the crop must fit the image), else ``patch`` (3D volumes: smaller
    patches), else ``size`` (the synthetic 2D scenes, generated at that size: 0.75x-1.25x). Rounded to
    multiples of 32 in 2D (the backbones' largest stride) and 16 in 3D."""
    crop = (data.get("augment") or {}).get("crop")
    if crop:
        key, value, factors = "data.augment.crop", crop, (0.5, 0.75, 1.0)
    elif data.get("patch"):
        key, value, factors = "data.patch", data["patch"], (0.5, 0.75, 1.0)
    elif data.get("size"):
        key, value, factors = "data.size", data["size"], (0.75, 1.0, 1.25)
    else:
        return {}
    step = 16 if len(value) == 3 else 32
    choices = []
    for f in factors:
        scaled = [max(step, int(round(v * f / step)) * step) for v in value]
        choices.append("[" + ",".join(str(v) for v in scaled) + "]")
    return {key: list(dict.fromkeys(choices))}


def optuna_space(config: DictConfig, trial) -> None:
    """Optuna ``custom_search_space`` (conf/sweep/optuna.yaml), so that one sweep config serves every task:
    a categorical choice of half / the configured / double width for each width key of the sweep's head
    (``head_width_keys``) and of the training crop/size (``train_size_choices``). A key already swept or fixed
    on the command line is left alone (e.g. ``data.size=[64,64]``); the head width is skipped when the sweep
    also varies ``head`` (the width keys then differ per trial)."""
    taken = set(sweep_keys(config))
    spaces = train_size_choices(OmegaConf.to_container(config.data, resolve=True))
    if "head" in _swept_groups(config):
        log.warning("the sweep varies head: no head-width parameter (its keys differ per head)")
    else:
        spaces.update(head_width_choices(OmegaConf.to_container(config.head, resolve=True)))
    for key, choices in spaces.items():
        if key not in taken and len(choices) > 1:
            trial.suggest_categorical(key, choices)


# ---- checking the sweep's parameters before any trial ---------------------------------------------------


def sweep_keys(config: DictConfig) -> list[str]:
    """The keys a multirun will override: ``hydra.sweeper.params`` and the command-line overrides."""
    keys = []
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    if params:
        keys += [str(k) for k in params.keys()]
    task = OmegaConf.select(config, "hydra.overrides.task", default=None) or []
    for override in OverridesParser.create().parse_overrides([str(t) for t in task]):
        if override.is_add() or override.is_delete() or override.is_force_add():
            continue  # "+key" adds, "~key" deletes: not expected to exist
        keys.append(override.get_key_element())
    return list(dict.fromkeys(keys))


def _swept_groups(config: DictConfig) -> set[str]:
    """Config groups (backbone, head, ...) that take several values in this sweep."""
    swept = set()
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    items = [f"{k}={v}" for k, v in params.items()]
    items += [str(t) for t in (OmegaConf.select(config, "hydra.overrides.task", default=None) or [])]
    for override in OverridesParser.create().parse_overrides(items):
        if override.is_sweep_override():
            swept.add(override.get_key_element())
    return swept


def check_sweep_params(config: DictConfig) -> None:
    """Raise ``ValueError`` naming the first swept key that is not in ``config``, with the valid keys of its
    parent node (and the closest match). Config-group choices (``backbone=...``) are left to Hydra, which
    lists the available options itself; keys under a group that the sweep itself varies are not checked (the
    node differs per choice)."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    groups = {str(g) for g in choices.keys()}
    swept = _swept_groups(config)
    tree = OmegaConf.to_container(config, resolve=False)
    for key in sweep_keys(config):
        if key.split("@")[0] in groups:  # a group choice such as backbone=mci0,mobilenetv3_large
            continue
        parts = key.split(".")
        if parts[0] in groups and parts[0] in swept:
            continue
        node, path = tree, []
        for part in parts:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                parent = ".".join(path) or "<root>"
                valid = sorted(str(k) for k in node) if isinstance(node, dict) else []
                close = difflib.get_close_matches(part, valid, n=1)
                hint = f" Did you mean '{'.'.join([*path, close[0]])}'?" if close else ""
                raise ValueError(
                    f"sweep parameter '{key}' does not exist in the config: '{parent}' has no key '{part}'."
                    f"{hint} Valid keys of '{parent}': {valid if valid else type(node).__name__ + ' value'}. "
                    f"(Sweep '+{key}' to add a new key on purpose.)"
                )
            path.append(part)


class CheckSweepParams(Callback):
    """Hydra callback: ``check_sweep_params`` at the start of a multirun, before the first trial."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_sweep_params(config)
        except ValueError as err:
            # Hydra turns an Exception raised in a callback into a warning and starts the sweep anyway;
            # SystemExit is not an Exception: the process stops here with the message and exit status 1
            raise SystemExit(f"Error in the sweep: {err}") from err
