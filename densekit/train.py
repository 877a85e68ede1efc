"""The composition root: a resolved Hydra config in, a trained model and its final metrics out.

This is the only module that knows Hydra/OmegaConf; everything it builds takes plain arguments.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import warnings
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelSummary

from .checkpointing import (
    AtomicCheckpointIO, BestCheckpoint, FiniteWeights, LastCheckpoint, RNGState, TrainingInterrupted,
    check_resume_checkpoint, remove_stale_temp_files, resolve_ckpt_path,
)
from .data import DenseDataModule, build_dataset
from .errors import ConfigError
from .inference import model_from_config
from .runinfo import config_tree, run_name, write_git_info
from .runs import (
    AppendingCSVLogger, StepProgressBar, check_writable, claim_run_dir, dir_size, expected_checkpoint_bytes,
    format_bytes, free_space_warning,
)
from .tasks import TASK_MODULES
from .tasks.base import NONFINITE_POLICIES

log = logging.getLogger(__name__)

# Which heads make sense for which task; checked before any data or model is built.
_DENSE_2D_HEADS = {"lraspp", "unet", "fpn", "deeplabv3plus", "ffnet", "lightm"}
TASK_HEADS = {
    "seg": _DENSE_2D_HEADS, "depth": _DENSE_2D_HEADS, "flow": {"flow"}, "volume": {"revunet3d", "lightm"},
}
TASK_DIMS = {"seg": 2, "depth": 2, "flow": 2, "volume": 3}
BACKBONE_DIMS = {"lightm3d": 3, "revmb3d": 3}  # every other backbone is 2D


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


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


def check_config(cfg: DictConfig) -> None:
    """Reject incompatible combinations early, with the valid options in the message."""
    task = cfg.task.name
    if task not in TASK_MODULES:
        raise ValueError(f"task={task} is not available; choose one of {sorted(TASK_MODULES)}")
    heads = TASK_HEADS[task]
    if cfg.head.name not in heads:
        raise ValueError(f"head={cfg.head.name} does not fit task={task}; valid heads: {sorted(heads)}")
    if cfg.get("nonfinite", "raise") not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite={cfg.nonfinite!r}: expected one of {list(NONFINITE_POLICIES)}")
    dims = BACKBONE_DIMS.get(cfg.backbone.name, 2)
    if dims != TASK_DIMS[task]:
        raise ValueError(
            f"backbone={cfg.backbone.name} is {dims}D but task={task} needs a {TASK_DIMS[task]}D backbone"
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


_LOADER_KEYS = ("batch_size", "num_workers", "val_batch_size")
# task-level facts, not dataset arguments
_TASK_KEYS = ("num_classes", "class_names", "ignore_index", "eval_crop")


def split_data_config(data: dict) -> tuple[str, dict, dict, dict]:
    """A plain data config -> (dataset name, dataset kwargs, loader kwargs, per-split lengths)."""
    data = dict(data)
    name = data.pop("name")
    loader = {k: data.pop(k) for k in _LOADER_KEYS if k in data}
    lengths = {"train": data.pop("train_length", None), "val": data.pop("val_length", None)}
    for key in _TASK_KEYS:
        data.pop(key, None)
    return name, data, loader, lengths


def build_datamodule(cfg: DictConfig) -> DenseDataModule:
    name, data, loader, lengths = split_data_config(_plain(cfg.data))

    def make(split: str):
        length = {} if lengths.get(split) is None else {"length": lengths[split]}
        return build_dataset(name, split, targets=tuple(cfg.task.targets), **length, **data)

    interval = cfg.trainer.get("val_check_interval")
    # an int interval counts training batches: an epoch holds at least that many (a smaller split repeats),
    # so that validation runs as configured instead of Lightning refusing an interval longer than the epoch
    min_batches = interval if isinstance(interval, int) and not isinstance(interval, bool) else 0
    return DenseDataModule(make, seed=cfg.seed, min_train_batches=min_batches, **loader)


def _world_size(trainer: dict) -> int:
    """The number of training processes the trainer config asks for (1 when it leaves it to Lightning)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    else:
        try:
            count = int(devices)
        except (TypeError, ValueError):
            count = 1  # "auto"
    return max(1, count) * max(1, int(trainer.get("num_nodes") or 1))


def check_data(cfg: DictConfig, datamodule: DenseDataModule) -> list[str] | None:
    """Build the datasets (cheap: file listing) and check them against the config, filling in what the data
    knows and the config leaves open: ``data.num_classes`` (from classes.txt, dataset.json or the reader),
    ``backbone.in_channels`` (3D: the volumes' channels). Adapts the batch size and epoch to a small train
    split (``DenseDataModule.fit_to_split``). Returns the class names; every change is in
    ``datamodule.notes``."""
    datamodule.setup("fit")
    notes = datamodule.notes
    train_set = datamodule.train_set
    channels = getattr(train_set, "in_channels", None)
    if channels is not None and "in_channels" in cfg.backbone and cfg.backbone.in_channels != channels:
        source = getattr(train_set, "channels_source", None) or f"data={cfg.data.name}"
        datamodule._note(f"backbone.in_channels={cfg.backbone.in_channels} -> {channels}: the data has {channels} "
                         f"input channel(s) ({source})")
        cfg.backbone.in_channels = int(channels)
    for dataset in (train_set, datamodule.val_set):
        for text in getattr(dataset, "notes", None) or []:
            datamodule._note(text)
    rule = getattr(train_set, "intensity", None)
    measured = getattr(rule, "range", None)
    if measured is not None and "intensity" in cfg.data and cfg.data.intensity.get("range") is None:
        # the train split's measured raw range goes into the saved config (config.yaml, the checkpoint), so
        # evaluation and prediction scale images exactly as training did
        cfg.data.intensity.range = [float(measured[0]), float(measured[1])]
    world = _world_size(_plain(cfg.trainer))
    length = datamodule.fit_to_split(world)
    max_steps, max_epochs = int(cfg.trainer.get("max_steps") or -1), cfg.trainer.get("max_epochs")
    per_epoch = length // (datamodule.batch_size * world)
    if max_steps > 0 and max_epochs not in (None, -1) and max_steps > int(max_epochs) * per_epoch:
        datamodule._note(
            f"trainer.max_steps={max_steps} will not be reached: trainer.max_epochs={max_epochs} x {per_epoch} "
            f"batches per epoch stops at step {int(max_epochs) * per_epoch}; set trainer.max_epochs=-1 to train "
            f"to max_steps"
        )
    if cfg.task.name not in ("seg", "volume"):
        return None
    names = (getattr(datamodule.val_set, "class_names", None) or getattr(train_set, "class_names", None)
             or cfg.data.get("class_names"))
    given = None if OmegaConf.is_missing(cfg.data, "num_classes") else cfg.data.get("num_classes")
    if given is None:
        if names is None:
            raise ConfigError(
                f"data.num_classes is not set and data={cfg.data.name} does not list its classes: set "
                f"data.num_classes=K (and data.class_names), or give the dataset a class list"
            )
        cfg.data.num_classes = len(names)
        log.info("data.num_classes=%d from the data's class list %s", len(names), list(names)[:10])
    elif names is not None and len(names) != given:
        raise ConfigError(
            f"data.num_classes={given} but data={cfg.data.name} has {len(names)} classes: {list(names)[:10]}"
        )
    weights = (cfg.task.get("loss") or {}).get("class_weights")
    if weights is not None and len(weights) != cfg.data.num_classes:
        raise ConfigError(f"task.loss.class_weights has {len(weights)} weights but data={cfg.data.name} has "
                          f"{cfg.data.num_classes} classes: give one weight per class")
    if names is not None and cfg.data.get("class_names") is None:
        # the names the data gave (classes.txt, dataset.json) go into the saved config, so evaluate.py, the
        # Predictor and the notebook name the classes; the reader's own input (``classes``, an interpolation of
        # class_names) is frozen first, so that a rebuilt reader still reads e.g. classes.txt's colour table
        if "classes" in cfg.data:
            cfg.data.classes = cfg.data.classes
        cfg.data.class_names = [str(n) for n in names]
    return list(names) if names is not None else None


def record_fingerprint(run_dir: Path, datamodule: DenseDataModule) -> dict:
    """The quick data checks of ``scripts/inspect_data.py`` on a sample of each split, at the start of a run:
    written to ``<run_dir>/fingerprint.json``; their warnings (0/255 masks, 16-bit ranges, bad samples, ...)
    go to the log and the run's notes. Never fails the run (a failure to describe the data is a note)."""
    import json

    from .data.fingerprint import quick_check

    prints = {split: quick_check(ds) for split, ds in (("train", datamodule.train_set), ("val", datamodule.val_set))
              if ds is not None}
    if pl.utilities.rank_zero_only.rank == 0:
        (run_dir / "fingerprint.json").write_text(json.dumps(prints, indent=2, default=str) + "\n")
    for split, fp in prints.items():
        for text in fp.get("warnings") or []:
            datamodule._note(f"{split} data: {text}")
    return prints


def build_task(cfg: DictConfig, class_names: list[str] | None = None, with_noc: bool = False) -> pl.LightningModule:
    task = cfg.task.name
    config = _plain(cfg)
    # None: the backbone's configured ``pretrained``. With init_from or a resume the weights come from that
    # checkpoint: loading (or failing to reach) the hub weights first would only be overwritten, and would
    # log a misleading "continuing from RANDOM initialisation"
    from_checkpoint = bool(cfg.get("init_from") or cfg.get("ckpt_path"))
    model = model_from_config(config, pretrained=False if from_checkpoint else None)
    if task == "flow":
        return TASK_MODULES[task](model, loss=_plain(cfg.task.loss), with_noc=with_noc, optim=_plain(cfg.optim),
                                  config=config)
    if task == "depth":
        return TASK_MODULES[task](
            model, loss=_plain(cfg.task.loss), metrics=_plain(cfg.task.metrics), optim=_plain(cfg.optim), config=config
        )
    if task == "volume":
        return TASK_MODULES[task](
            model,
            num_classes=cfg.data.num_classes,
            class_names=class_names,
            labels=cfg.data.get("labels"),
            loss=_plain(cfg.task.loss),
            inference=_plain(cfg.task.get("inference")),
            metrics=_plain(cfg.task.get("metrics")),
            ignore_index=cfg.data.get("ignore_index", 255),
            optim=_plain(cfg.optim),
            config=config,
        )
    if task == "seg":
        return TASK_MODULES[task](
            model,
            num_classes=cfg.data.num_classes,
            class_names=class_names,
            loss=_plain(cfg.task.loss),
            ignore_index=cfg.data.get("ignore_index", 255),
            optim=_plain(cfg.optim),
            config=config,
        )
    raise ValueError(f"task={task} is not available")


def init_weights(module: pl.LightningModule, path: str | Path) -> None:
    """Load the model weights of a densekit checkpoint into ``module.model`` (strict; the optimiser and
    step start fresh): the next stage of a staged schedule, e.g. flow_chairs -> flow_things."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_from: checkpoint not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"init_from: could not read {path}: {type(err).__name__}: {err}") from err
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not state:
        raise ValueError(f"init_from: {path} is not a Lightning checkpoint (no state_dict)")
    state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    own = module.model.state_dict()
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
    log.info("initialised the model from %s", path)


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


def build_logger(cfg: DictConfig, run_dir: Path):
    kind = cfg.logger.name
    if kind in (None, "none"):
        return False
    name = run_name(cfg.task.name, cfg.backbone.name, cfg.head.name, cfg.logger.get("run_name"))
    if kind == "csv":
        # appends to <run_dir>/csv/metrics.csv when a run resumes (Lightning's CSVLogger would delete it)
        return AppendingCSVLogger(save_dir=str(run_dir), name="csv", version="")
    if kind == "tensorboard":
        # <run_dir>/tensorboard/<run name>/events.out.tfevents.*: `tensorboard --logdir outputs` names runs
        return pl.loggers.TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=name,
                                            default_hp_metric=False)
    if kind == "wandb":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        return pl.loggers.WandbLogger(
            project=cfg.logger.get("project", "densekit"),
            name=name,
            save_dir=str(run_dir),  # otherwise wandb writes ./wandb into the working directory
            offline=mode == "offline",
            config=_plain(cfg),
        )
    raise ValueError(f"unknown logger {kind!r}; expected csv, tensorboard, wandb or none")


def record_run(cfg: DictConfig, run_dir: Path) -> dict:
    """Print the resolved config as a tree and write ``<run_dir>/git.txt``; returns the git facts."""
    git = write_git_info(run_dir)
    if pl.utilities.rank_zero_only.rank == 0:  # once, not per DDP process
        dirty = {True: " (dirty)", False: "", None: ""}[git["dirty"]]
        print(config_tree(_plain(cfg), title=f"config  [git {git['commit'][:12]}{dirty}]"), flush=True)
    return git


def format_metrics(metrics: dict[str, float]) -> str:
    """A two-column text table, headline metrics first, then per-class values."""
    rows = sorted(metrics.items(), key=lambda kv: ("/" in kv[0].removeprefix("val/"), kv[0]))
    width = max(len(k) for k, _ in rows) if rows else 10
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{k:<{width}}  {v:.4f}" for k, v in rows]
    return "\n".join(lines)


# What the latest train() call did, for densekit.sweeps.run_trial's result.json: "run_dir", "resumed_from",
# "start_step", "global_step", "steps_trained", "best_checkpoint" (None without a monitored validation),
# "last_checkpoint", "metrics_checkpoint" and "metrics_from" (which checkpoint the final metrics come from,
# and why), "size_bytes", "warnings" (the run's and the task module's run_warnings), "notes" (the
# datamodule's, and what was moved aside). Filled as the run goes: a failed run leaves what it knew.
last_run: dict = {}

RESUME_CHOICES = (None, False, "auto")


def resume_point(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``ckpt_path`` (``last`` = <run_dir>/checkpoints/last.ckpt), else with
    ``resume=auto`` that last.ckpt when it exists, else None (a fresh run)."""
    auto = cfg.get("resume")
    if auto not in RESUME_CHOICES:
        raise ConfigError(f"resume={auto!r}: expected auto (resume from <output_dir>/checkpoints/last.ckpt "
                          f"if it exists, else start fresh) or null")
    if cfg.get("ckpt_path"):
        return resolve_ckpt_path(cfg.ckpt_path, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if auto == "auto" and last.is_file() else None


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


def _resume_warnings(cfg: DictConfig, resume: Path) -> tuple[int, list[str]]:
    """(the checkpoint's global step, warnings about continuing it with this config)."""
    import torch

    ckpt = torch.load(str(resume), map_location="cpu", weights_only=False, mmap=True)
    step = int(ckpt.get("global_step", 0))
    saved = (ckpt.get("hyper_parameters") or {}).get("config") or {}
    then, now = saved.get("trainer") or {}, _plain(cfg.trainer)
    changed = [f"trainer.{k} {then.get(k)} -> {now.get(k)}" for k in ("max_steps", "max_epochs")
               if k in then and then.get(k) != now.get(k)]
    scheduler = (cfg.optim.get("scheduler") or "none") if cfg.get("optim") else "none"
    if changed and scheduler != "none":
        return step, [
            f"resuming at step {step} with {', '.join(changed)}: the {scheduler} LR schedule's length follows "
            f"the run's length, so from step {step} it follows the schedule of the new length (the first part "
            f"ran on the shorter one; an uninterrupted run would differ; optim.scheduler=none keeps them equal)"
        ]
    return step, []


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
    resume = resume_point(cfg, run_dir)  # ckpt_path=last / resume=auto: <run_dir>/checkpoints/last.ckpt
    start_step = 0
    if resume is not None:
        check_resume_checkpoint(resume, _plain(cfg))
        start_step, extend = _resume_warnings(cfg, resume)
        run_warnings += extend
    last_run.update(resumed_from=str(resume) if resume else None, start_step=start_step)
    # a directory with a previous run's checkpoints: resume it, or refuse (RunDirInUse), or overwrite=true
    # moves its files aside; before anything is written into it
    for line in claim_run_dir(run_dir, resume, overwrite=bool(cfg.get("overwrite"))):
        log.warning(line)
        run_notes.append(line)
    git = record_run(cfg, run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    names = check_data(cfg, datamodule)
    quiet_library_logs()
    record_fingerprint(run_dir, datamodule)
    # Sintel / KITTI mark non-occluded pixels: then the metrics are also split into noc / occ
    with_noc = cfg.task.name == "flow" and "noc" in datamodule.val_set[0]
    module = build_task(cfg, names, with_noc=with_noc)
    if cfg.get("init_from"):
        init_weights(module, cfg.init_from)
    policy = {"every_n_train_steps": 0, "save_last": True, "best_weights_only": True, "share_best_with_last": True,
              **_plain(cfg.get("checkpoint"))}
    # the disk the checkpoints need, now that the parameter count is known (before any training)
    moments = 2 if str(cfg.optim.get("name", "adamw")).startswith("adam") else 1
    need = expected_checkpoint_bytes(sum(p.numel() for p in module.parameters()), moments,
                                     bool(policy["best_weights_only"]))
    low = free_space_warning(run_dir, need)
    if low:
        log.warning(low)
        run_warnings.append(low)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    ckpt_dir = run_dir / "checkpoints"
    last = LastCheckpoint(ckpt_dir / "last.ckpt", every_n_train_steps=int(policy["every_n_train_steps"] or 0),
                          save_last=bool(policy["save_last"]))
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
    logger = build_logger(cfg, run_dir)
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
        default_root_dir=str(run_dir), logger=logger, callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],  # a kill during a save never leaves a truncated last.ckpt
        # the datamodule shards itself (resumable train order, unpadded validation shards): Lightning's
        # DistributedSampler would pad the validation split with repeated samples
        use_distributed_sampler=False,
        **trainer_kwargs,
    )
    with warnings.catch_warnings():
        # The synthetic data is generated in the main process on purpose (it is cheaper than a worker).
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # claim_run_dir has dealt with a used directory (resume, refuse or move aside)
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        except TrainingInterrupted as stop:
            print(f"\nInterrupted at step {stop.step}; last checkpoint: {stop.path}\n"
                  f"Resume with: {resume_command(run_dir)}", flush=True)
            # re-raised as Ctrl-C so that callers (a Hydra sweep) stop too, not go on to the next job
            raise KeyboardInterrupt from stop
        finally:
            _collect_notes(module, datamodule, run_warnings, run_notes)
        steps = trainer.global_step - start_step
        last_run.update(global_step=trainer.global_step, steps_trained=steps)
        if resume is not None and steps == 0:
            run_warnings.append(
                f"resumed at step {trainer.global_step}, which already meets trainer.max_steps="
                f"{trainer.max_steps} / trainer.max_epochs={trainer.max_epochs}: trained 0 steps (raise them to "
                f"train on)"
            )
        source, best, why = _metrics_checkpoint(checkpoint, last, module.monitor)
        results = trainer.validate(module, datamodule=datamodule, ckpt_path=source, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items() if not math.isnan(float(v))}
    size = dir_size(run_dir)
    last_run.update(best_checkpoint=best, last_checkpoint=str(last.path) if last.path.is_file() else None,
                    metrics_checkpoint=source, metrics_from=why, size_bytes=size)
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


def _collect_notes(module, datamodule, run_warnings: list[str], run_notes: list[str]) -> None:
    """Add the task module's ``run_warnings`` and the datamodule's ``notes`` (each once) to the run's."""
    for source, target in ((getattr(module, "run_warnings", None), run_warnings),
                           (getattr(datamodule, "notes", None), run_notes)):
        for line in source or []:
            if line not in target:
                target.append(str(line))


def _metrics_checkpoint(checkpoint: BestCheckpoint, last: LastCheckpoint, monitor: str
                        ) -> tuple[str | None, str | None, str]:
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
