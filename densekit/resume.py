"""Continuing from a checkpoint: which one to resume from, refusing one that cannot be resumed (before
anything is built), warnings about resuming it with another config, ``init_from`` weights, and the
generator states each checkpoint carries (:class:`RNGState`). No Hydra: plain run configs; every file is
read by ``densekit.builder.read_checkpoint``.

:class:`RNGState` stores the process's torch / numpy / python (and CUDA) generator states in each
checkpoint and puts them back before the first resumed step, so dropout and other in-step randomness
continue the uninterrupted stream. (Data order and augmentation do not depend on these states; see
``densekit.data.samplers``.)
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from .builder import checkpoint_config, model_state, plain, read_checkpoint
from .checkpointing import is_weights_only
from .errors import ConfigError

RESUME_CHOICES = (None, False, "auto")


# -- which checkpoint, and may it be resumed -----------------------------------------------------------------
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


def resume_point(config: dict, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``ckpt_path`` (``last`` = <run_dir>/checkpoints/last.ckpt), else with
    ``resume=auto`` that last.ckpt when it exists, else None (a fresh run)."""
    config = plain(config)
    auto = config.get("resume")
    if auto not in RESUME_CHOICES:
        raise ConfigError(
            f"resume={auto!r}: expected auto (resume from <output_dir>/checkpoints/last.ckpt "
            f"if it exists, else start fresh) or null"
        )
    if config.get("ckpt_path"):
        return resolve_ckpt_path(config["ckpt_path"], run_dir)
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return last if auto == "auto" and last.is_file() else None


def check_resume_checkpoint(path: Path, config: dict) -> None:
    """Refuse a checkpoint that training cannot resume: unreadable, not a Lightning checkpoint, weights
    only, or saved by a run of another task, backbone or head than ``config``."""
    ckpt = read_checkpoint(path, what="ckpt_path", weights=False)  # memory-mapped: tensors are not read
    if is_weights_only(ckpt):
        raise ValueError(
            f"ckpt_path: {path} holds model weights and config only (no optimiser, schedule or data position), "
            f"so training cannot resume from it: resume from the run's last.ckpt (ckpt_path=last with "
            f"output_dir=<its run dir>), or start a new run from these weights with init_from={path}"
        )
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


def resume_warnings(config: dict, resume: Path) -> tuple[int, list[str]]:
    """(the checkpoint's global step, warnings about continuing it with this config)."""
    config = plain(config)
    ckpt = read_checkpoint(resume, what="ckpt_path", weights=False)
    step = int(ckpt.get("global_step", 0))
    saved = (ckpt.get("hyper_parameters") or {}).get("config") or {}
    then, now = saved.get("trainer") or {}, config.get("trainer") or {}
    changed = [
        f"trainer.{k} {then.get(k)} -> {now.get(k)}"
        for k in ("max_steps", "max_epochs")
        if k in then and then.get(k) != now.get(k)
    ]
    scheduler = (config.get("optim") or {}).get("scheduler") or "none"
    if changed and scheduler != "none":
        return step, [
            f"resuming at step {step} with {', '.join(changed)}: the {scheduler} LR schedule's length follows "
            f"the run's length, so from step {step} it follows the schedule of the new length (the first part "
            f"ran on the shorter one; an uninterrupted run would differ; optim.scheduler=none keeps them equal)"
        ]
    return step, []


def init_weights(module: pl.LightningModule, path: str | Path) -> None:
    """Load the network weights of a densekit checkpoint into ``module.model`` (strict; the optimiser and
    step start fresh): the next stage of a staged schedule, e.g. flow_chairs -> flow_things."""
    ckpt = read_checkpoint(path, what="init_from")
    try:
        checkpoint_config(ckpt, path)  # a Lightning checkpoint of another program: refused, by name
    except ValueError as err:
        raise ValueError(f"init_from: {err}") from None
    state, own = model_state(ckpt), module.model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(
            f"init_from: {path} does not match this model: {len(missing)} missing (e.g. {missing[:5]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:5]}), {len(shapes)} with another shape "
            f"(e.g. {shapes[:5]}); was it trained with the same backbone/head?"
        )
    module.model.load_state_dict(state)


# -- generator states ---------------------------------------------------------------------------------------
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
        "numpy": {
            "kind": kind,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np_state = states["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["key"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    py_state = states["python"]
    random.setstate((py_state["version"], tuple(py_state["state"].tolist()), py_state["gauss"]))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
