"""Run directories and what a run leaves in them (Lightning plumbing, no Hydra).

* :func:`claim_run_dir` decides, before any data or model is built, what a run does with a directory that
  already holds files: resume the run in it, refuse (one line naming the directory and the choices), or
  with ``overwrite`` move the previous run's files into ``<run dir>/previous-<time>/``. Nothing is deleted.
  ``result.json`` and ``error.txt`` describe one attempt: an earlier attempt's copies are moved aside too.
* :class:`AppendingCSVLogger`: Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts
  (``_ExperimentWriter._check_log_dir_exists``); this one keeps the earlier rows and appends, so a resumed
  run's metrics follow the first part's.
* :class:`StepProgressBar`: the train bar's total (and so its ETA) is the batches this epoch will really run:
  ``min(batches in the epoch, the batches left to trainer.max_steps)``.
* :func:`check_writable`, :func:`free_space_warning`, :func:`dir_size`: checks before working, and the size of
  what a run wrote.
* :func:`build_logger`, :func:`quiet_library_logs`, and the end-of-run summary (:func:`format_metrics`,
  :func:`metrics_checkpoint`: which checkpoint the final metrics come from, and why).
"""

from __future__ import annotations

import csv
import errno
import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from .errors import ConfigError
from .runinfo import run_name

# What densekit and its loggers write into a run directory. Only these are moved aside: a user's own
# files in the directory are never touched. Hydra's train.log (appended to) and .hydra/ stay where they are:
# Hydra has opened them for this invocation before the run starts.
RUN_ENTRIES = (
    "checkpoints",
    "csv",
    "tensorboard",
    "wandb",
    "val_examples",
    "config.yaml",
    "git.txt",
    "result.json",
    "error.txt",
)
# One attempt's record: a new attempt (resumed or not) never leaves an earlier one's copy in place.
RECORD_FILES = ("result.json", "error.txt")
PREVIOUS_PREFIX = "previous-"


class RunDirInUse(ConfigError):
    """The output directory holds a previous run's checkpoints and this run would replace them."""


def checkpoint_files(run_dir: Path) -> list[Path]:
    ckpt_dir = Path(run_dir) / "checkpoints"
    return sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []


def _step_of(path: Path) -> int | None:
    from densekit.builder import read_checkpoint

    try:
        return int(read_checkpoint(path, weights=False)["global_step"])
    except Exception:  # only for the message; an unreadable file is reported when it is used
        return None


def set_aside(run_dir: Path, names=RUN_ENTRIES) -> tuple[Path | None, list[str]]:
    """Move the existing ``names`` of ``run_dir`` into a new ``previous-<YYYYmmdd-HHMMSS>/`` inside it;
    returns (that folder or None, the names moved)."""
    run_dir = Path(run_dir)
    present = [n for n in names if (run_dir / n).exists()]
    if not present:
        return None, []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = run_dir / f"{PREVIOUS_PREFIX}{stamp}", 1
    while target.exists():  # two runs in one second
        n += 1
        target = run_dir / f"{PREVIOUS_PREFIX}{stamp}-{n}"
    target.mkdir()
    for name in present:
        os.replace(run_dir / name, target / name)  # same file system: a rename, nothing copied
    return target, present


def claim_run_dir(run_dir: Path, resume: Path | None, overwrite: bool = False) -> list[str]:
    """Make ``run_dir`` ready for this run; returns lines to print (what was moved where).

    ``resume``: the checkpoint this run resumes from (None: a fresh run). Resuming a checkpoint of this
    directory keeps everything (the CSV logger appends); only the previous attempt's ``result.json`` /
    ``error.txt`` move aside. A fresh run into a directory with checkpoints raises :class:`RunDirInUse`
    unless ``overwrite`` (then the previous run's files move aside); without checkpoints (a run that failed
    before saving one) its files move aside and the run starts.
    """
    run_dir = Path(run_dir)
    ckpts = checkpoint_files(run_dir)
    own = resume is not None and Path(resume).resolve().parent == (run_dir / "checkpoints").resolve()
    if own or not ckpts:
        names = RECORD_FILES if own else RUN_ENTRIES
        why = "an earlier attempt's record" if own else "files of an earlier attempt that saved no checkpoint"
    elif overwrite:
        names, why = RUN_ENTRIES, "the previous run (overwrite=true)"
    else:
        last = run_dir / "checkpoints" / "last.ckpt"
        step = _step_of(last) if last.is_file() else None
        held = ", ".join(p.name + (f" (step {step})" if p == last and step is not None else "") for p in ckpts)
        resume_hint = (
            "resume it with ckpt_path=last (or resume=auto)" if last.is_file() else "it has no last.ckpt to resume from"
        )
        if resume is not None:
            raise RunDirInUse(
                f"output_dir {run_dir} holds another run's checkpoints ({held}) and resuming {resume} there "
                f"would replace them: choose a new output_dir=..., or pass overwrite=true to move that run's "
                f"files to {run_dir}/{PREVIOUS_PREFIX}<time>/"
            )
        raise RunDirInUse(
            f"output_dir {run_dir} already holds a run ({held}): {resume_hint}, choose a new "
            f"output_dir=..., or pass overwrite=true to start afresh (its files are moved to "
            f"{run_dir}/{PREVIOUS_PREFIX}<time>/, nothing is deleted)"
        )
    target, moved = set_aside(run_dir, names)
    return [f"Moved {why} ({', '.join(moved)}) to {target}"] if target else []


def check_writable(path: Path, what: str = "output_dir") -> Path:
    """Create ``path`` and write (then remove) a probe file in it; PermissionError/OSError in one line naming
    it otherwise. A real write, not ``os.access``: root, ACLs and read-only mounts all answer truthfully."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".densekit-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        message = f"{what} {path} is not writable ({reason}): choose another {what}=... or fix its permissions"
        if isinstance(err, PermissionError) or err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionError(message) from None
        # the same OSError subclass as the cause (NotADirectoryError for a file in the path, ...): str() is the
        # one line, the errno stays
        kind = type(err) if type(err) is not OSError else OSError
        out = kind(message)
        out.errno = err.errno
        raise out from None
    return path


def expected_checkpoint_bytes(num_params: int, optimizer_moments: int = 2, best_weights_only: bool = True) -> int:
    """Disk a run needs for its checkpoints: last.ckpt = fp32 weights + the optimiser's moments (AdamW: 2),
    a weights-only best beside it, and room for the temporary copy of an atomic save."""
    weights = 4 * int(num_params)
    last = weights * (1 + optimizer_moments)
    best = weights if best_weights_only else last
    return 2 * last + best  # the new last.ckpt is written next to the old one before it replaces it


def free_space_warning(path: Path, need: int) -> str | None:
    """A warning line when the file system of ``path`` has less than ``need`` bytes free."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free >= need:
        return None
    return (
        f"only {format_bytes(free)} free on the disk of {path}, but this run's checkpoints need about "
        f"{format_bytes(need)}: a checkpoint save may fail (the previous checkpoint is kept if it does)"
    )


def dir_size(path: Path) -> int:
    """Bytes in ``path``, each file counted once (a hard-linked checkpoint under two names is one file)."""
    seen, total = set(), 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "kB") or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# -- loggers and progress -------------------------------------------------------------------------------
class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning's writer deletes metrics.csv here; keep it and continue its columns
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` (a resumed run) instead of deleting it; new
    columns rewrite the file with the old rows kept (Lightning's own new-header path)."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def batches_this_epoch(
    num_batches: float, first_batch: int, max_steps: int, global_step: int, accumulate: int = 1
) -> float:
    """The batch index at which this epoch will end: all its batches, or fewer when ``max_steps`` comes
    first (``first_batch``: where the epoch starts, >0 when resumed mid-epoch)."""
    if max_steps is None or max_steps < 0 or math.isinf(num_batches):
        return num_batches
    return min(num_batches, first_batch + max(0, max_steps - global_step) * max(1, int(accumulate)))


class StepProgressBar(TQDMProgressBar):
    """tqdm bar whose train total follows ``max_steps``: with max_steps=3 in a 1000-batch epoch it counts to
    3 (and its ETA is for 3 batches). The total is set at the epoch's first batch, when the resumed position
    (a mid-epoch start) is known; the rate counts from there."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending_total = False

    @property
    def total_train_batches(self) -> float:
        # at the epoch's start, before its first batch: the guess for an epoch that starts at batch 0
        trainer = self.trainer
        return batches_this_epoch(
            super().total_train_batches, 0, trainer.max_steps, trainer.global_step, trainer.accumulate_grad_batches
        )

    def on_train_start(self, trainer, *args) -> None:
        super().on_train_start(trainer, *args)
        self._pending_total = True  # a run resumed mid-epoch gets no on_train_epoch_start for that epoch

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._pending_total = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if self._pending_total and bar is not None:
            self._pending_total = False
            total = batches_this_epoch(
                trainer.num_training_batches,
                batch_idx,
                trainer.max_steps,
                trainer.global_step,
                trainer.accumulate_grad_batches,
            )
            bar.total = None if math.isinf(total) else total
            bar.initial = bar.n = batch_idx
            bar.set_description(f"Epoch {trainer.current_epoch}")  # refreshes


# -- logs, loggers and the end-of-run summary ---------------------------------------------------------
class _DropLines(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes`` (library advertising, not facts)."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_library_logs() -> None:
    """Silence what libraries print on every run that tells the user nothing about it: Lightning 2.6's
    "Tip: ... try installing litlogger/litmodels" lines and the deprecation warning that Lightning's own
    ``_pytree`` triggers in torch 2.14 (``isinstance(treespec, LeafSpec)``; not from densekit's calls).
    Idempotent."""
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLines) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLines("\N{ELECTRIC LIGHT BULB} Tip:", "Tip:"))
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def build_logger(config: dict, run_dir: Path):
    """The Lightning logger ``config["logger"]`` names (csv, tensorboard, wandb), writing under ``run_dir``;
    False for none."""
    logger = config.get("logger") or {}
    kind = logger.get("name")
    if kind in (None, "none"):
        return False
    name = run_name(config["task"]["name"], config["backbone"]["name"], config["head"]["name"], logger.get("run_name"))
    if kind == "csv":
        # appends to <run_dir>/csv/metrics.csv when a run resumes (Lightning's CSVLogger would delete it)
        return AppendingCSVLogger(save_dir=str(run_dir), name="csv", version="")
    if kind == "tensorboard":
        # <run_dir>/tensorboard/<run name>/events.out.tfevents.*: `tensorboard --logdir outputs` names runs
        return pl.loggers.TensorBoardLogger(
            save_dir=str(run_dir), name="tensorboard", version=name, default_hp_metric=False
        )
    if kind == "wandb":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        return pl.loggers.WandbLogger(
            project=logger.get("project", "densekit"),
            name=name,
            save_dir=str(run_dir),  # otherwise wandb writes ./wandb into the working directory
            offline=mode == "offline",
            config=config,
        )
    raise ValueError(f"unknown logger {kind!r}; expected csv, tensorboard, wandb or none")


def format_metrics(metrics: dict[str, float]) -> str:
    """A two-column text table, headline metrics first, then per-class values."""
    rows = sorted(metrics.items(), key=lambda kv: ("/" in kv[0].removeprefix("val/"), kv[0]))
    width = max(len(k) for k, _ in rows) if rows else 10
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{k:<{width}}  {v:.4f}" for k, v in rows]
    return "\n".join(lines)


def collect_notes(module, datamodule, run_warnings: list[str], run_notes: list[str]) -> None:
    """Add the task module's ``run_warnings`` and the datamodule's ``notes`` (each once) to the run's."""
    for source, target in (
        (getattr(module, "run_warnings", None), run_warnings),
        (getattr(datamodule, "notes", None), run_notes),
    ):
        for line in source or []:
            if line not in target:
                target.append(str(line))


def metrics_checkpoint(checkpoint, last, monitor: str) -> tuple[str | None, str | None, str]:
    """(the checkpoint to compute the final metrics with, the best checkpoint or None, the summary's words
    for where the metrics come from). "Best" only for a file the monitored validation chose."""
    best = checkpoint.best_model_path
    if best and Path(best).is_file():
        return best, best, "best checkpoint"
    if checkpoint.validations == 0:
        why = "no validation ran during training, so there is no best"
    else:
        why = f"validation ran {checkpoint.validations}x but logged no {monitor}, so there is no best"
    if last.path.is_file():
        return str(last.path), None, f"{last.path.name}: {why}"
    return None, None, f"the final weights in memory: {why}, and checkpoint.save_last=false wrote no last.ckpt"
