"""Collect the trials of a Hydra sweep into one table (``python scripts/sweep_report.py <multirun dir>``).

Reads ``<multirun dir>/<n>/result.json`` (written by every trial of `python train.py -m ...`, failed ones
included), writes ``sweep_report.csv`` (one row per trial: status, objective, every override, every final
metric, wall time, best checkpoint, error) and ``sweep_report.md`` (a markdown table of the overrides that
differ between trials, sorted by the objective in the task's direction: best first, then trials without an
objective) into the multirun directory, and returns the markdown. A trial directory without result.json (a
killed trial) is listed with status ``missing``, never skipped.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .sweeps import RESULT_FILE


def _trial_dirs(root: Path) -> list[Path]:
    # Hydra gives every job a .hydra/ folder; sort numerically (0, 1, ..., 10), not as text
    dirs = [p for p in root.iterdir() if p.is_dir() and ((p / ".hydra").is_dir() or (p / RESULT_FILE).is_file())]
    return sorted(dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _split_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value


def load_trials(root: str | Path) -> list[dict]:
    """One dict per trial directory: result.json's fields, ``dir``, ``params`` (the overrides as a dict)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory not found: {root}")
    trials = []
    for d in _trial_dirs(root):
        path = d / RESULT_FILE
        if not path.is_file():
            trials.append(
                {
                    "dir": d.name,
                    "status": "missing",
                    "objective": None,
                    "params": {},
                    "metrics": {},
                    "error": f"no {RESULT_FILE} (killed or still running?)",
                }
            )
            continue
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(record, dict) or "status" not in record:
            raise ValueError(f"{path}: expected a densekit trial record with a 'status' key, got {str(record)[:200]}")
        record["dir"] = d.name
        record["params"] = dict(_split_override(o) for o in record.get("overrides") or [])
        trials.append(record)
    if not trials:
        raise ValueError(f"no trial directories (<n>/.hydra or <n>/{RESULT_FILE}) under {root}")
    return trials


def _direction(trials: list[dict]) -> str:
    directions = {t.get("direction") for t in trials if t.get("direction")}
    if len(directions) > 1:
        raise ValueError(f"the trials disagree on the direction ({sorted(directions)}): mixed tasks in one sweep?")
    return directions.pop() if directions else "maximize"


def rank(trials: list[dict]) -> list[dict]:
    """Trials with an objective first, best first in the sweep's direction; then the others in trial order."""
    sign = -1.0 if _direction(trials) == "maximize" else 1.0

    def has_value(t):
        v = t.get("objective")
        return isinstance(v, (int, float)) and math.isfinite(v)

    done = sorted((t for t in trials if has_value(t)), key=lambda t: sign * t["objective"])
    return done + [t for t in trials if not has_value(t)]


def varying_params(trials: list[dict]) -> list[str]:
    """Override keys whose value differs between trials (the swept ones), in first-seen order."""
    keys = list(dict.fromkeys(k for t in trials for k in t["params"]))
    return [k for k in keys if len({t["params"].get(k) for t in trials if t["status"] != "missing"}) > 1]


def _fmt(value) -> str:
    """Short, for the markdown table: 4 significant digits for floats (also for floats given as text)."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return f"{number:.4g}" if "." in value or "e" in value.lower() else value
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _full(value) -> str:
    """Exact, for the CSV."""
    return "" if value is None else str(value)


def write_csv(trials: list[dict], path: Path) -> None:
    params = list(dict.fromkeys(k for t in trials for k in t["params"]))
    metrics = list(dict.fromkeys(k for t in trials for k in t.get("metrics") or {}))
    fields = ["trial", "status", "objective", *params, *metrics, "wall_time_s", "best_checkpoint", "error"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for t in trials:
            writer.writerow(
                [
                    t["dir"],
                    t["status"],
                    _full(t.get("objective")),
                    *[t["params"].get(k, "") for k in params],
                    *[_full((t.get("metrics") or {}).get(k)) for k in metrics],
                    _full(t.get("wall_time_s")),
                    t.get("best_checkpoint") or "",
                    t.get("error") or "",
                ]
            )


def markdown(trials: list[dict]) -> str:
    monitor = next((t.get("monitor") for t in trials if t.get("monitor")), "objective")
    direction = _direction(trials)
    params = varying_params(trials)
    head = ["rank", "trial", "status", f"{monitor} ({direction[:3]})", *params, "wall (s)", "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, t in enumerate(rank(trials), 1):
        ok = isinstance(t.get("objective"), (int, float)) and math.isfinite(t["objective"])
        error = (t.get("error") or "").replace("|", "\\|")
        error = error if len(error) <= 120 else error[:117] + "..."
        row = [
            str(i) if ok else "-",
            t["dir"],
            t["status"],
            _fmt(t.get("objective")),
            *[_fmt(t["params"].get(k, "")) for k in params],
            _fmt(t.get("wall_time_s")),
            error,
        ]
        lines.append("| " + " | ".join(row) + " |")
    failed = sum(t["status"] != "ok" for t in trials)
    ok = len(trials) - failed
    lines.append(f"\n{len(trials)} trials, {ok} ok, {failed} failed or without an objective")
    return "\n".join(lines)


def report(root: str | Path) -> str:
    """Write sweep_report.csv / sweep_report.md into ``root`` and return the markdown."""
    root = Path(root)
    trials = load_trials(root)
    write_csv(rank(trials), root / "sweep_report.csv")
    text = markdown(trials)
    (root / "sweep_report.md").write_text(text + "\n")
    return text
