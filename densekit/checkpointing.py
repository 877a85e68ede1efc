"""Checkpoints that survive kills and resume exactly (Lightning plumbing; no Hydra).

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the same directory, fsyncs it
  and renames it over the target (``os.replace`` is atomic on POSIX): a kill or a full disk during a save
  leaves the previous file intact, never a truncated one.
* :class:`LastCheckpoint` owns ``last.ckpt`` (the full training state): it writes it at the end of every
  epoch (after that epoch's validation and best-checkpoint bookkeeping: with a :class:`BestCheckpoint` it
  is written by that callback, which Lightning runs after all others), at the step that reaches
  ``trainer.max_steps`` (a mid-epoch position, so that a resume with a larger ``max_steps`` trains on),
  every ``every_n_train_steps`` optimiser steps (mid-epoch resume points) and on Ctrl-C. (Lightning 2.6's
  ``ModelCheckpoint(save_last=True)`` only refreshes ``last.ckpt`` when a new best is saved, so it would
  resume from the best epoch, not the latest.) It turns the first Ctrl-C (SIGINT) into a clean stop: it
  finishes the running step, writes ``last.ckpt`` on every process's agreement and raises
  :class:`TrainingInterrupted`. A second Ctrl-C interrupts at once (Lightning's KeyboardInterrupt
  handling, no checkpoint).
* :class:`BestCheckpoint` writes ``best-*.ckpt`` with the model weights and the run config only (what
  evaluate, Predictor, export and ``init_from`` read; a third of the full state with AdamW). When the
  best and the last checkpoint are the same training state (the usual end of a run), the best name is a
  hard link to ``last.ckpt``: one file on disk; when ``last.ckpt`` moves on, the best file is rewritten
  with its weights only.

Resuming (the generator states each checkpoint carries, checking a checkpoint before a resume) is
``densekit.resume``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

_TMP_MARK = ".tmp-"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are all-or-nothing: ``.<name>.tmp-<pid>`` next to the target,
    flushed and fsynced, then ``os.replace``d onto it; the temporary file is removed if anything fails."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO.save_checkpoint takes no storage_options, got {storage_options!r}")
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
        except OSError as err:
            if isinstance(err, CheckpointWriteError):
                raise
            kept = "the previous file is intact" if path.is_file() else "nothing was written"
            hint = (
                " (disk full: free space there, then resume with ckpt_path=last)"
                if err.errno in (errno.ENOSPC, errno.EDQUOT)
                else ""
            )
            raise CheckpointWriteError(
                err.errno, f"could not write checkpoint {path}: {err.strerror or err}; {kept}{hint}"
            ) from err
        finally:
            tmp.unlink(missing_ok=True)


class CheckpointWriteError(OSError):
    """A checkpoint save failed (e.g. the disk is full); ``str()`` is one line naming the file, the cause
    and that the previous checkpoint was kept."""

    def __str__(self) -> str:
        return str(self.strerror)


def hard_link(src: Path, dst: Path) -> bool:
    """Make ``dst`` a hard link to ``src`` (atomically replacing ``dst``); False where the file system has
    no hard links (then ``dst`` is left as it was)."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}{_TMP_MARK}{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        log.info("could not hard-link %s to %s (%s): keeping two files", dst, src, err)
        return False
    return True


# what a weights-only checkpoint keeps (Lightning's own weights_only dump plus the datamodule position):
# everything evaluate, Predictor, export and init_from read; no optimiser, schedule, callback or RNG state
WEIGHTS_KEYS = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "densekit_version",
    "state_dict",
    "loops",
    "hparams_name",
    "hyper_parameters",
    "datamodule_hparams_name",
    "datamodule_hyper_parameters",
    "DenseDataModule",
)


def is_weights_only(ckpt: dict) -> bool:
    """A Lightning checkpoint saved with ``weights_only`` (its loop state, no optimiser state)."""
    return isinstance(ckpt, dict) and "state_dict" in ckpt and "loops" in ckpt and "optimizer_states" not in ckpt


def strip_to_weights(path: Path) -> None:
    """Rewrite the checkpoint ``path`` with its weights and config only (atomically; a hard link at
    ``path`` is replaced by a new file, the other names of the old file keep the full state)."""
    from .builder import read_checkpoint  # here: the builder imports data and tasks

    path = Path(path)
    ckpt = read_checkpoint(path, weights=False)  # memory-mapped: the kept tensors are read once, by the save
    if is_weights_only(ckpt):
        return
    AtomicCheckpointIO().save_checkpoint({k: ckpt[k] for k in WEIGHTS_KEYS if k in ckpt}, path)


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
    """Write ``path`` (the run's ``last.ckpt``, full training state) at each epoch end, at the step that
    reaches ``trainer.max_steps``, every ``every_n_train_steps`` optimiser steps (0: only at those points)
    and on a graceful Ctrl-C stop. ``save_last=False``: only the ``every_n_train_steps`` and Ctrl-C saves
    (such a run cannot be resumed or extended from its end)."""

    def __init__(self, path: str | Path, every_n_train_steps: int = 0, save_last: bool = True):
        if int(every_n_train_steps) < 0:
            raise ValueError(f"checkpoint.every_n_train_steps must be >= 0, got {every_n_train_steps}")
        self.path, self.every, self.save_last = Path(path), int(every_n_train_steps), bool(save_last)
        self.best: BestCheckpoint | None = None  # set by BestCheckpoint(last=...): it saves the epoch ends
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
        print(
            "\nCtrl-C: stopping after this training step and writing the last checkpoint "
            "(press Ctrl-C again to stop at once, without it)",
            flush=True,
        )

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
        if self.best is not None and trainer.is_global_zero:
            self.best.before_last_saved(self.path)
        trainer.save_checkpoint(str(self.path), weights_only=False)
        self._saved_step = trainer.global_step
        if self.best is not None and trainer.is_global_zero:
            self.best.after_last_saved(trainer, self.path)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stop = self.stop_requested
        if trainer.world_size > 1:  # Ctrl-C may reach one process only: stop all together
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        # with gradient accumulation only the first batch end at a new global_step follows an optimiser
        # step; later ones (same step, already saved) are skipped by the _saved_step guard
        due = self.every > 0 and trainer.global_step > 0 and trainer.global_step % self.every == 0
        # the step that reaches max_steps: saved here, as a mid-epoch position. Lightning then ends the epoch
        # early and marks it done in the loop state; a checkpoint written at that epoch end would make a
        # resume with a larger max_steps start the next epoch (or stop at max_epochs) instead of training on
        final = self.save_last and 0 < trainer.max_steps <= trainer.global_step
        if (due or stop or final) and trainer.global_step != self._saved_step:
            self._save(trainer)
        if stop:
            raise TrainingInterrupted(self.path, trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.best is None:
            self.save_epoch_end(trainer)

    def save_epoch_end(self, trainer: pl.Trainer) -> None:
        """The epoch-end save: always, even if this step was saved at its batch end, since the end-of-epoch
        validation and best-checkpoint bookkeeping have run by now and belong in the state - except when the
        epoch was cut short by max_steps (that step's mid-epoch checkpoint is the resume point)."""
        if not self.save_last:
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        cut_short = trainer.global_step == self._saved_step and progress.ready < trainer.num_training_batches
        if not cut_short:
            self._save(trainer)


def check_finite_weights(pl_module: torch.nn.Module, step: int) -> None:
    """Raise FloatingPointError naming the parameters that hold NaN or inf."""
    bad = [name for name, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(
            f"non-finite weights after step {step} in {len(bad)} parameter(s) "
            f"(e.g. {bad[:3]}); not writing a checkpoint of them. Lower optim.lr or enable trainer.gradient_clip_val."
        )


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for ``best-*.ckpt`` (save_top_k=1 on the task's monitor) that

    * saves the weights and config only when ``weights_only`` (Lightning then skips the callbacks'
      ``on_save_checkpoint``, so the finite-weights check runs here);
    * counts the validations it saw during fitting (``validations``): no validation, no best;
    * runs ``last``'s epoch-end save after its own bookkeeping (Lightning calls checkpoint callbacks after
      all other callbacks; ``last.ckpt`` written before would not know this epoch's best, and a resumed
      run would keep a stale best beside the new one and compare against nothing);
    * with ``share_with_last``: when ``last.ckpt`` is written at the step of the best checkpoint, makes the
      best name a hard link to it (one file on disk); when ``last.ckpt`` moves on, rewrites the best file
      with its weights only (``strip_to_weights``), so it never holds a second copy of the training state.
    """

    def __init__(
        self,
        *args,
        last: LastCheckpoint | None = None,
        weights_only: bool = True,
        share_with_last: bool = True,
        **kwargs,
    ):
        super().__init__(*args, save_weights_only=weights_only, **kwargs)
        self.last, self.share_with_last = last, bool(share_with_last)
        if last is not None:
            last.best = self
        self.validations = 0
        self._best_step: int | None = None  # the global step of best_model_path, saved in this process
        self._linked: str | None = None  # the best file that was a hard link to last.ckpt before its save

    def load_state_dict(self, state_dict: dict) -> None:
        # a run directory that was moved or copied (e.g. from a cluster) keeps its best: Lightning ignores the
        # saved best-k bookkeeping when the absolute dirpath differs, so a resumed run would start a second best
        saved, best = state_dict.get("dirpath"), state_dict.get("best_model_path")
        if (
            saved
            and self.dirpath
            and os.path.abspath(saved) != os.path.abspath(self.dirpath)
            and best
            and os.path.isfile(os.path.join(self.dirpath, os.path.basename(best)))
        ):

            def here(path):
                return os.path.join(self.dirpath, os.path.basename(path)) if path else path

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                "best_model_path": here(best),
                "kth_best_model_path": here(state_dict.get("kth_best_model_path")),
                "last_model_path": here(state_dict.get("last_model_path")),
                "best_k_models": {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items()},
            }
        super().load_state_dict(state_dict)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validations += 1
        super().on_validation_end(trainer, pl_module)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        check_finite_weights(trainer.lightning_module, trainer.global_step)
        super()._save_checkpoint(trainer, filepath)
        self._best_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.last is not None:
            self.last.save_epoch_end(trainer)

    def before_last_saved(self, last_path: Path) -> None:
        """Called on rank 0 before ``last.ckpt`` is replaced: is the best file a link to it (this process's or
        an earlier one's, before a resume)?"""
        best = self.best_model_path
        try:
            shared = bool(best) and Path(last_path).is_file() and os.path.samefile(best, last_path)
        except OSError:
            shared = False
        self._linked = best if shared else None

    def after_last_saved(self, trainer: pl.Trainer, last_path: Path) -> None:
        """Called on rank 0 right after ``last.ckpt`` was written at ``trainer.global_step``."""
        linked, self._linked = self._linked, None
        if linked and Path(linked).is_file() and self.save_weights_only:
            strip_to_weights(Path(linked))  # the old last.ckpt state lives on under this name only
        best = self.best_model_path
        if self.share_with_last and best and self._best_step == trainer.global_step and Path(best).is_file():
            hard_link(last_path, Path(best))  # one file under both names (two where hard links are unsupported)


class FiniteWeights(pl.Callback):
    """Refuse to write any checkpoint whose parameters hold NaN or inf (raises FloatingPointError inside
    ``save_checkpoint``, before a byte is written): a diverged run keeps its last good checkpoint. A
    non-finite loss is already stopped before its optimiser step (``DenseTask.training_step``); this also
    catches a finite loss whose update overflowed."""

    def on_save_checkpoint(self, trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        check_finite_weights(pl_module, trainer.global_step)
