"""What ``scripts/inspect_data.py`` runs: fingerprint every requested split of the configured data, suggest
overrides and render the report. Plain dicts in, text out: the script only composes the config (Hydra)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...config_types import select
from ...errors import ConfigError, DataError
from ..registry import build_dataset
from .listing import raw_listing
from .measure import DEFAULT_MAX_SAMPLES, fingerprint
from .report import format_fingerprint
from .sources import source_kind
from .suggest import CPU_BUDGET, GPU_BUDGET, suggest

# the script's own options (top-level keys of conf/inspect.yaml, not train.py keys) and their defaults
OPTIONS = {"max_samples": None, "budget": None, "splits": ["train", "val"], "json": None}
_ABSENT = object()


def check_options(options: dict) -> dict:
    """The script options (``OPTIONS`` keys), validated: a ``ConfigError`` in one line naming the key."""
    out = dict(OPTIONS)
    out.update({k: v for k, v in options.items() if k in OPTIONS})
    for key in ("max_samples", "budget"):
        value = out[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key}={value!r}: expected a positive integer or null")
    splits = [out["splits"]] if isinstance(out["splits"], str) else out["splits"]
    if not isinstance(splits, (list, tuple)) or not splits or not all(isinstance(s, str) for s in splits):
        raise ConfigError(f"splits={out['splits']!r}: expected a list of split names, e.g. [train,val]")
    out["splits"] = list(splits)
    if out["json"] is not None:
        out["json"] = str(out["json"])
    return out


def check_root(data: dict) -> None:
    """A ``data.root`` that does not exist, said before any reader is built."""
    root = data.get("root")
    if root is not None and not Path(str(root)).expanduser().is_dir():
        raise FileNotFoundError(
            f"data.root not found: {Path(str(root)).expanduser().resolve()} (data={data.get('name')})"
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = text.splitlines()
    return lines[0] if len(lines) == 1 else " ".join(t.strip() for t in lines[:3])  # a listing: its head


def fingerprint_splits(
    name: str, kwargs: dict, targets: tuple[str, ...], splits: list[str], max_samples: int | None
) -> dict[str, dict]:
    """{split: fingerprint, or {"error": why}}. A split the reader refuses (e.g. 0/255 masks) is measured
    from the raw files of its folder layout, with the reader's message as a warning; a wrong config value
    (``ConfigError``) is the user's to fix and is raised."""
    out: dict[str, dict] = {}
    for split in splits:
        try:
            dataset = build_dataset(name, split, targets=tuple(targets), **kwargs)
        except ConfigError:
            raise  # a wrong config value is the user's to fix, not a finding about the data
        except (ValueError, FileNotFoundError, TypeError) as exc:
            reason = _one_line(exc)
            try:
                dataset = raw_listing(name, split, kwargs, reader_error=reason)
            except (ValueError, FileNotFoundError, OSError):
                dataset = None
            if dataset is None or len(dataset) == 0:
                out[split] = {"error": reason}
                continue
        k = max_samples or DEFAULT_MAX_SAMPLES[3 if source_kind(dataset) == "volume" else 2]
        out[split] = fingerprint(dataset, max_samples=k)
    return out


def inspect_data(config: dict, name: str, kwargs: dict, options: dict) -> str:
    """The report of ``scripts/inspect_data.py`` for a plain ``config`` (train.py's, resolved) whose data
    config splits into dataset ``name`` and reader ``kwargs``; ``options`` as ``check_options`` returns
    them. Writes ``options["json"]`` when set, nothing else."""
    data, task = config["data"], config["task"]["name"]
    kwargs = {k: v for k, v in kwargs.items() if v != "???"}  # a required value the reader can do without
    splits = fingerprint_splits(
        name, kwargs, tuple(config["task"]["targets"]), options["splits"], options["max_samples"]
    )
    good = {s: v for s, v in splits.items() if "error" not in v}
    if not good:
        first = next(iter(splits.values()))["error"]
        raise DataError(f"data={name}: no split could be read: {first}")
    root = data.get("root")
    fp = {"data": name, "root": root, "task": task, "splits": splits}
    train = good.get("train") or next(iter(good.values()))
    ndim = train["ndim"]
    if (ndim == 3) != (task == "volume"):
        train.setdefault("warnings", []).append(
            f"{ndim}D data with task={task}: use task={'volume' if ndim == 3 else 'seg, depth or flow'}"
        )
    budget = options["budget"] or (GPU_BUDGET if torch.cuda.is_available() else CPU_BUDGET)[ndim]
    suggestions = suggest(fp, data, task, config=config, budget=budget)
    for key, s in suggestions.items():
        value = select(config, key, _ABSENT)
        s["supported"] = value is not _ABSENT and value != "???"  # a key this config has (and may set)
    if options["json"]:
        path = Path(options["json"]).expanduser()
        try:
            path.write_text(json.dumps({**fp, "suggestions": suggestions}, indent=2))
        except OSError as exc:
            raise PermissionError(f"json={options['json']}: cannot write ({exc.strerror or exc})") from None
    read = ", ".join(f"{v['read']} of {v['samples']} {s}" for s, v in good.items())
    head = f"data={name} root={root} task={task}: read {read} samples\n\n"
    return head + format_fingerprint(fp, suggestions)


__all__ = ["OPTIONS", "check_options", "check_root", "fingerprint_splits", "inspect_data"]
