"""Checkpoints that survive kills and resume exactly (Lightning plumbing; no Hydra).

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the same directory, fsyncs it
  and renames it over the target (``os.replace`` is atomic on POSIX): a kill or a full disk during a save
  leaves the previous file intact, never a truncated one.
* :class:`LastCheckpoint` owns ``last.ckpt``: it writes it at the end of every epoch (after that epoch's
  validation and best-checkpoint bookkeeping), every ``every_n_train_steps`` optimiser steps (mid-epoch
  resume points) and on Ctrl-C. (Lightning 2.6's ``ModelCheckpoint(save_last=True)`` only refreshes
  ``last.ckpt`` when a new best is saved, so it would resume from the best epoch, not the latest.) It
  turns the first Ctrl-C (SIGINT) into a clean stop: it finishes the running step, writes ``last.ckpt`` on every process's agreement and raises :class:`TrainingInterrupted`. A second
  Ctrl-C interrupts at once (Lightning's KeyboardInterrupt handling, no checkpoint).
* :class:`RNGState` stores the process's torch / numpy / python (and CUDA) generator states in each
  checkpoint and puts them back before the first resumed step, so dropout and other in-step randomness
  continue the uninterrupted stream. (Data order and augmentation do not depend on these states; see
  ``densekit.data.samplers``.)
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)

_TMP_MARK = ".tmp-"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are all-or-nothing: ``.<name>.tmp-<pid>`` next to the target,
    flushed and fsynced, then ``os.replace``d onto it; the temporary file is removed if anything fails."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"AtomicCheckpointIO.save_checkpoint takes no storage_options, got {storage_options!r}"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
            os.replace(tmp, path)
            _fsync_dir(path.parent)  # ... and the rename itself survives a power cut
        finally:
            tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a file system that cannot open directories: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete ``.*.tmp-<pid>`` files left by a process killed while saving (its pid no longer runs)."""
    removed = []
    for tmp in Path(directory).glob(f".*{_TMP_MARK}*"):
        pid = tmp.name.rsplit(_TMP_MARK, 1)[-1]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrainingInterrupted(Exception):
    """Training stopped on Ctrl-C after writing ``path`` (resume with ``ckpt_path=<path>``)."""

    def __init__(self, path: Path, step: int):
        super().__init__(f"interrupted at step {step}; last checkpoint: {path}")
        self.path, self.step = Path(path), int(step)


class LastCheckpoint(pl.Callback):
    """Write ``path`` (the run's ``last.ckpt``) at each epoch end, every ``every_n_train_steps`` optimiser
    steps (0: only at epoch ends) and on a graceful Ctrl-C stop."""

    def __init__(self, path: str | Path, every_n_train_steps: int = 0):
        if int(every_n_train_steps) < 0:
            raise ValueError(f"checkpoint.every_n_train_steps must be >= 0, got {every_n_train_steps}")
        self.path, self.every = Path(path), int(every_n_train_steps)
        self.stop_requested = False
        self._previous_handler = None
        self._fitting = False
        self._outer_handler = None  # the handler before fit (_previous_handler is cleared on restore)
        self._saved_step = -1

    # -- SIGINT -------------------------------------------------------------------------------------
    def _on_sigint(self, signum, frame) -> None:
        if not self._fitting:
            # a handler left behind after fit: Lightning records the handlers after on_fit_start and puts them
            # back in its teardown, which on an exception runs after on_exception - so this one can outlive
            # the run. Then Ctrl-C does what it did before the run, and that handler comes back.
            outer = self._outer_handler if self._outer_handler is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, outer)
            if callable(outer):
                outer(signum, frame)
            elif outer != signal.SIG_IGN:
                raise KeyboardInterrupt
            return
        if self.stop_requested:  # second Ctrl-C: give up on the clean stop
            self._restore_handler()
            raise KeyboardInterrupt
        self.stop_requested = True
        print("\nCtrl-C: stopping after this training step and writing the last checkpoint "
              "(press Ctrl-C again to stop at once, without it)", flush=True)

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_requested = False
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._fitting = True
            self._previous_handler = self._outer_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._fitting = False
        self._restore_handler()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException):
        self._fitting = False
        self._restore_handler()

    # -- saving -------------------------------------------------------------------------------------
    def _save(self, trainer: pl.Trainer) -> None:
        # every process calls it; the strategy writes on rank 0. Full state (optimiser, loops): resumable
        trainer.save_checkpoint(str(self.path), weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stop = self.stop_requested
        if trainer.world_size > 1:  # Ctrl-C may reach one process only: stop all together
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        # with gradient accumulation only the first batch end at a new global_step follows an optimiser
        # step; later ones (same step, already saved) are skipped by the _saved_step guard
        due = self.every > 0 and trainer.global_step > 0 and trainer.global_step % self.every == 0
        if (due or stop) and trainer.global_step != self._saved_step:
            self._save(trainer)
        if stop:
            raise TrainingInterrupted(self.path, trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # always (even if this step was saved at its batch end): the end-of-epoch validation has run by now,
        # so the saved ModelCheckpoint state already knows whether this epoch gave a new best
        self._save(trainer)


class FiniteWeights(pl.Callback):
    """Refuse to write any checkpoint whose parameters hold NaN or inf (raises FloatingPointError inside
    ``save_checkpoint``, before a byte is written): a diverged run keeps its last good checkpoint. A
    non-finite loss is already stopped before its optimiser step (``DenseTask.training_step``); this also
    catches a finite loss whose update overflowed."""

    def on_save_checkpoint(self, trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        bad = [name for name, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise FloatingPointError(
                f"non-finite weights after step {trainer.global_step} in {len(bad)} parameter(s) "
                f"(e.g. {bad[:3]}); not writing a checkpoint of them. Lower optim.lr or enable trainer.gradient_clip_val."
            )


class RNGState(pl.Callback):
    """Save the generator states with each checkpoint; restore them right before the first resumed step."""

    key = "densekit_rng"

    def __init__(self):
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[self.key] = collect_rng_states()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.key)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None


def collect_rng_states() -> dict:
    """Generator states as tensors and plain Python values only, so checkpoints stay loadable with
    ``torch.load(weights_only=True)`` (Lightning's default when it reads a checkpoint back)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np_state = states["numpy"]
    np.random.set_state((np_state["kind"], np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    py_state = states["python"]
    random.setstate((py_state["version"], tuple(py_state["state"].tolist()), py_state["gauss"]))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# -- checking a resume checkpoint before anything is built ----------------------------------------------
def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> Path | None:
    """``ckpt_path`` -> an existing file: ``last`` means ``<run_dir>/checkpoints/last.ckpt``."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        path = Path(run_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: no checkpoint at {path}; pass the run directory to resume as "
                f"output_dir=<run dir> (or hydra.run.dir=<run dir>), or ckpt_path=<file>"
            )
        return path
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: checkpoint not found: {path}")
    return path


def check_resume_checkpoint(path: Path, config: dict) -> None:
    """Refuse a checkpoint whose saved run config names another task, backbone or head than ``config``."""
    try:
        try:  # mmap: only the hyper-parameters are read, not every tensor
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # legacy (non-zip) checkpoints cannot be memory-mapped
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"ckpt_path: could not read {path}: {type(err).__name__}: {err}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"ckpt_path: {path} is not a Lightning checkpoint (no state_dict)")
    saved = (ckpt.get("hyper_parameters") or {}).get("config") or {}
    wanted = {part: (config.get(part) or {}).get("name") for part in ("task", "backbone", "head")}
    found = {part: (saved.get(part) or {}).get("name") for part in ("task", "backbone", "head")}
    if wanted != found:
        mine = " ".join(f"{k}={v}" for k, v in wanted.items())
        theirs = " ".join(f"{k}={v}" for k, v in found.items())
        raise ValueError(
            f"ckpt_path: {path} was trained with {theirs}, but this run is {mine}; resume with the same "
            f"task/backbone/head (or use init_from=... to start a new run from compatible weights)"
        )
