"""The composition root of training: a composed Hydra config in, a trained model and its final metrics out.

It checks the config (``check_config``: the task's own ``check_choices``, the dataset's registered tasks),
builds the data, task module and network through ``densekit.builder`` (plain dicts: the same builder
rebuilds a checkpoint for evaluation and inference), fills in what the data knows (``densekit.datacheck``), and
runs Lightning with densekit's checkpoint and resume callbacks. The library below it (models, data, tasks,
builder) takes plain arguments; Hydra entry points (train.py, scripts, ``densekit.sweeps``) call ``train``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelSummary

from .builder import datamodule_from_config, task_from_config
from .checkpointing import (
    AtomicCheckpointIO,
    BestCheckpoint,
    FiniteWeights,
    LastCheckpoint,
    TrainingInterrupted,
    remove_stale_temp_files,
)
from .data import DATASETS
from .data.datamodule import available_cpus, resolve_threads
from .datacheck import check_data, record_fingerprint
from .resume import RNGState, check_resume_checkpoint, init_weights, resume_point, resume_warnings
from .runinfo import config_tree, write_git_info
from .runs import (
    StepProgressBar,
    build_logger,
    check_writable,
    claim_run_dir,
    collect_notes,
    dir_size,
    expected_checkpoint_bytes,
    format_bytes,
    format_metrics,
    free_space_warning,
    metrics_checkpoint,
    quiet_library_logs,
)
from .tasks import TASKS, get_task
from .tasks.base import NONFINITE_POLICIES

log = logging.getLogger(__name__)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def check_config(cfg: DictConfig) -> None:
    """Reject incompatible combinations early (before any data or model is built), with the valid options
    in the message: the task's heads and backbones (its ``check_choices``), the dataset's tasks."""
    task = cfg.task.name
    if task not in TASKS:
        raise ValueError(f"task={task} is not available; choose one of {sorted(TASKS)}")
    if cfg.get("nonfinite", "raise") not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite={cfg.nonfinite!r}: expected one of {list(NONFINITE_POLICIES)}")
    cls = get_task(task)
    cls.check_choices(cfg.backbone.name, cfg.head.name)
    data = cfg.get("data") or {}
    if data.get("name") in DATASETS and not cls.fits_data(DATASETS.facts(data.name)):
        serves = "/".join(DATASETS.fact(data.name, "tasks", ()))
        fits = [name for name in sorted(DATASETS) if cls.fits_data(DATASETS.facts(name))]
        raise ValueError(
            f"data={data.name} has no {', '.join(cls.targets)} targets for task={task} (it serves "
            f"task {serves}); datasets for task={task}: {fits}"
        )


def output_dir(cfg: DictConfig) -> Path:
    """The run directory: ``cfg.output_dir`` if set, else the Hydra run directory (conf/train.yaml makes
    them one directory when output_dir is set). Created, and checked writable by writing a probe file: an
    unwritable location is one PermissionError line naming it, before any data or model is built."""
    if cfg.get("output_dir"):
        path = Path(cfg.output_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            raise ValueError("no output_dir: set output_dir=... or run through train.py (Hydra)")
        path = Path(HydraConfig.get().runtime.output_dir)
    return check_writable(path, "output_dir")


def check_trainer(kwargs: dict) -> dict:
    """Check the ``trainer`` config before anything is built: GPU strategies need the GPUs they ask for."""
    kwargs = dict(kwargs)
    if kwargs.pop("use_distributed_sampler", False):
        raise ValueError(
            "trainer.use_distributed_sampler must stay false: densekit's datamodule shards the data itself "
            "(Lightning's DistributedSampler pads validation with repeated samples and breaks exact resume)"
        )
    if str(kwargs.get("accelerator", "auto")) in ("gpu", "cuda"):
        import torch

        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = kwargs.get("devices", "auto")
        if isinstance(devices, (list, tuple)):
            wanted = max(devices) + 1 if devices else 1
        elif devices in (-1, "-1", "auto"):
            wanted = 1
        else:
            wanted = int(devices)
        if have < wanted:
            strategy = kwargs.get("strategy", "auto")
            raise RuntimeError(
                f"trainer.accelerator={kwargs['accelerator']} (strategy={strategy}, devices={devices}) needs "
                f"{wanted} CUDA GPU(s), but {have} {'is' if have == 1 else 'are'} visible "
                f"(torch.cuda.is_available()={torch.cuda.is_available()}); on CPU use trainer=ddp_cpu or "
                f"trainer=default"
            )
    if isinstance(kwargs.get("strategy"), dict):  # a configured strategy object, e.g. conf/trainer/fsdp.yaml
        from hydra.utils import instantiate

        kwargs["strategy"] = instantiate(kwargs["strategy"])
    return kwargs


def record_run(cfg: DictConfig, run_dir: Path) -> dict:
    """Print the resolved config as a tree and write ``<run_dir>/git.txt``; returns the git facts."""
    git = write_git_info(run_dir)
    if pl.utilities.rank_zero_only.rank == 0:  # once, not per DDP process
        dirty = {True: " (dirty)", False: "", None: ""}[git["dirty"]]
        print(config_tree(_plain(cfg), title=f"config  [git {git['commit'][:12]}{dirty}]"), flush=True)
    return git


# What the latest train() call did, for densekit.sweeps.run_trial's result.json: "run_dir", "resumed_from",
# "start_step", "global_step", "steps_trained", "best_checkpoint" (None without a monitored validation),
# "last_checkpoint", "metrics_checkpoint" and "metrics_from" (which checkpoint the final metrics come from,
# and why), "size_bytes", "warnings" (the run's and the task module's run_warnings), "notes" (the
# datamodule's, and what was moved aside). Filled as the run goes: a failed run leaves what it knew.
last_run: dict = {}


def resume_command(run_dir: Path) -> str:
    """A command line that resumes this run as printed: the run's own overrides (from Hydra when it runs
    through train.py) with output_dir and ckpt_path=last in place of any earlier ones."""
    from hydra.core.hydra_config import HydraConfig

    own = ("output_dir", "ckpt_path", "resume", "overwrite")
    if HydraConfig.initialized():
        overrides = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~") not in own]
    else:
        overrides = ["<the same overrides>"]
    words = ["python", "train.py", *overrides, f"output_dir={Path(run_dir).resolve()}", "ckpt_path=last"]
    return " ".join(w if w.startswith("<") else shlex.quote(w) for w in words)


def training_threads(cfg: DictConfig, trainer_kwargs: dict, num_workers: int) -> int:
    """The run's torch intra-op threads (top-level ``threads``, see ``resolve_threads``): CPU DDP processes
    of this machine share its CPUs."""
    processes = 1
    devices = trainer_kwargs.get("devices", 1)
    if str(trainer_kwargs.get("accelerator")) == "cpu" and isinstance(devices, int) and devices > 1:
        processes = devices
    threads = resolve_threads(cfg.get("threads", "auto"), num_workers, processes)
    log.info(
        "torch threads: %d (threads=%s; %d CPUs, data.num_workers=%d, %d training process(es))",
        threads,
        cfg.get("threads", "auto"),
        available_cpus(),
        num_workers,
        processes,
    )
    return threads


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count is ``n`` inside, the caller's again after (train() may be called from
    a notebook or a sweep, which keep their own setting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train per ``cfg``; returns the final validation metrics, of the best checkpoint when a monitored
    validation ran (else of last.ckpt; the printed summary and ``last_run`` say which and why)."""
    last_run.clear()
    run_warnings: list[str] = []
    run_notes: list[str] = []
    last_run.update(warnings=run_warnings, notes=run_notes)
    from .config_schema import validate_config  # typed values first: a wrong one fails in seconds, by key

    validate_config(_plain(cfg))
    check_config(cfg)
    if cfg.get("init_required") and not cfg.get("init_from"):
        raise ValueError(
            f"this recipe continues from experiment={cfg.init_required}: pass init_from=<its best checkpoint> "
            f"(or init_from=... any densekit checkpoint of the same model)"
        )
    for key in ("init_from", "ckpt_path"):  # before any data or model is built
        path = cfg.get(key)
        if path and path != "last" and not Path(path).is_file():
            raise FileNotFoundError(f"{key}: checkpoint not found: {path}")
    trainer_kwargs = check_trainer(_plain(cfg.trainer))
    run_dir = output_dir(cfg)  # created and checked writable
    last_run["run_dir"] = str(run_dir)
    config = _plain(cfg)  # as composed (check_data fills in more before the task is built)
    resume = resume_point(config, run_dir)  # ckpt_path=last / resume=auto: <run_dir>/checkpoints/last.ckpt
    start_step = 0
    if resume is not None:
        check_resume_checkpoint(resume, config)
        start_step, extend = resume_warnings(config, resume)
        run_warnings += extend
    last_run.update(resumed_from=str(resume) if resume else None, start_step=start_step)
    # a directory with a previous run's checkpoints: resume it, or refuse (RunDirInUse), or overwrite=true
    # moves its files aside; before anything is written into it
    for line in claim_run_dir(run_dir, resume, overwrite=bool(cfg.get("overwrite"))):
        log.warning(line)
        run_notes.append(line)
    git = record_run(cfg, run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = datamodule_from_config(config)
    names = check_data(cfg, datamodule)
    threads = training_threads(cfg, trainer_kwargs, datamodule.num_workers)
    quiet_library_logs()
    record_fingerprint(run_dir, datamodule)
    # Sintel / KITTI mark non-occluded pixels: then the flow metrics are also split into noc / occ
    with_noc = "noc" in get_task(cfg.task.name).optional_targets and "noc" in datamodule.val_set[0]
    # with init_from or a resume the network's weights come from that checkpoint (no hub download first)
    module = task_from_config(_plain(cfg), names, with_noc=with_noc)
    if cfg.get("init_from"):
        init_weights(module, cfg.init_from)
        log.info("initialised the model from %s", cfg.init_from)
    policy = {
        "every_n_train_steps": 0,
        "save_last": True,
        "best_weights_only": True,
        "share_best_with_last": True,
        **_plain(cfg.get("checkpoint")),
    }
    # the disk the checkpoints need, now that the parameter count is known (before any training)
    moments = 2 if str(cfg.optim.get("name", "adamw")).startswith("adam") else 1
    need = expected_checkpoint_bytes(
        sum(p.numel() for p in module.parameters()), moments, bool(policy["best_weights_only"])
    )
    low = free_space_warning(run_dir, need)
    if low:
        log.warning(low)
        run_warnings.append(low)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    ckpt_dir = run_dir / "checkpoints"
    last = LastCheckpoint(
        ckpt_dir / "last.ckpt",
        every_n_train_steps=int(policy["every_n_train_steps"] or 0),
        save_last=bool(policy["save_last"]),
    )
    checkpoint = BestCheckpoint(
        dirpath=str(ckpt_dir),
        # no "=" in the name (Lightning's default would write best-epoch=00.ckpt): the path is then safe
        # to paste into a Hydra override such as init_from=... or ckpt_path=...
        filename="best-epoch{epoch:02d}-step{step}",
        auto_insert_metric_name=False,
        monitor=module.monitor,
        mode=module.monitor_mode,
        save_top_k=1,
        save_last=False,  # last.ckpt belongs to LastCheckpoint (epoch ends, max_steps, every n steps, Ctrl-C)
        last=last,  # writes last.ckpt's epoch-end save after its own bookkeeping
        weights_only=bool(policy["best_weights_only"]),
        share_with_last=bool(policy["share_best_with_last"]),
    )
    logger = build_logger(_plain(cfg), run_dir)
    callbacks = [checkpoint, last, RNGState(), FiniteWeights()]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
        logger.log_hyperparams({"git": git})  # beside the module's hparams (the resolved config)
    if trainer_kwargs.get("enable_model_summary", True):
        callbacks.append(ModelSummary(max_depth=2))  # params per part: model.backbone, model.head, ...
    if trainer_kwargs.get("enable_progress_bar", True):
        # tqdm, not rich (picked when rich is installed): it also shows progress in logs and CI output; its
        # train total (and ETA) follows max_steps
        callbacks.append(StepProgressBar())
    if ckpt_dir.is_dir():
        remove_stale_temp_files(ckpt_dir)  # left by a run killed while saving
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],  # a kill during a save never leaves a truncated last.ckpt
        # the datamodule shards itself (resumable train order, unpadded validation shards): Lightning's
        # DistributedSampler would pad the validation split with repeated samples
        use_distributed_sampler=False,
        **trainer_kwargs,
    )
    with warnings.catch_warnings(), torch_threads(threads):
        # Loader workers are chosen for the machine (data.num_workers, threads): Lightning's advice to use
        # more workers assumes the CPUs are free for them.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # claim_run_dir has dealt with a used directory (resume, refuse or move aside)
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        except TrainingInterrupted as stop:
            print(
                f"\nInterrupted at step {stop.step}; last checkpoint: {stop.path}\n"
                f"Resume with: {resume_command(run_dir)}",
                flush=True,
            )
            # re-raised as Ctrl-C so that callers (a Hydra sweep) stop too, not go on to the next job
            raise KeyboardInterrupt from stop
        finally:
            collect_notes(module, datamodule, run_warnings, run_notes)
        steps = trainer.global_step - start_step
        last_run.update(global_step=trainer.global_step, steps_trained=steps)
        if resume is not None and steps == 0:
            run_warnings.append(
                f"resumed at step {trainer.global_step}, which already meets trainer.max_steps="
                f"{trainer.max_steps} / trainer.max_epochs={trainer.max_epochs}: trained 0 steps (raise them to "
                f"train on)"
            )
        source, best, why = metrics_checkpoint(checkpoint, last, module.monitor)
        results = trainer.validate(module, datamodule=datamodule, ckpt_path=source, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items() if not math.isnan(float(v))}
    size = dir_size(run_dir)
    last_run.update(
        best_checkpoint=best,
        last_checkpoint=str(last.path) if last.path.is_file() else None,
        metrics_checkpoint=source,
        metrics_from=why,
        size_bytes=size,
    )
    if pl.utilities.rank_zero_only.rank == 0:
        print(f"\nFinal validation metrics ({why}):")
        print(format_metrics(metrics))
        print()
        if best:
            print(f"Best checkpoint: {best}")
        if last.path.is_file() and best and os.path.samefile(best, last.path):
            print(f"Last checkpoint: {last.path}  (the same training state: one file under both names)")
        elif last.path.is_file():
            print(f"Last checkpoint: {last.path}  (full training state)")
        if last.path.is_file():
            print(f"Train on with:   {resume_command(run_dir)} and a larger trainer.max_steps / max_epochs")
        print(f"Run directory:   {run_dir} ({format_bytes(size)})")
        for title, lines in (("Warnings", run_warnings), ("Notes", run_notes)):
            if lines:
                print(f"{title}:\n" + "\n".join(f"  - {line}" for line in lines))
    return metrics
