"""Evaluation is validation: a checkpoint rebuilt (``densekit.builder``), its model wrapped for test-time
augmentation or sliding windows (``densekit.models.wrappers``), then scored by ``pl.Trainer.validate`` with
the task's own validation step and metrics -- one loop for every task, so that offline numbers equal the
training run's by construction. Baselines (zero motion, OpenCV DIS, the training mean depth;
``densekit.evaluation_data``) are models scored by the same validate. ``scripts/evaluate.py`` (Hydra,
``conf/eval.yaml``) is the command line.

Everything that can be checked before a model is built is checked first (``prepare``): option types and
which task they apply to, that the data fits the checkpoint's task and classes, that ``save_dir`` is
writable and not inside the dataset. Errors are one line (``densekit.cli``).
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .builder import checkpoint_config, load_checkpoint_model, read_checkpoint, training_frame_size
from .config_schema import format_value, validate_config
from .errors import ConfigError, DataError
from .evaluation_data import BASELINES, eval_dataset
from .models.wrappers import FlipTTA, FlowTTA, SlidingWindow
from .tasks import get_task

# evaluate options that set a task's own config (task.metrics keys); refused for the other tasks
TASK_OPTIONS = {
    "depth": {
        "eval_crop": "crop",
        "min_depth": "min_depth",
        "max_depth": "max_depth",
        "median_scaling": "median_scaling",
    }
}


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself when it is a file; for a directory (a run directory or its checkpoints/): the newest
    ``best-*.ckpt``, else ``last.ckpt``, else the newest ``*.ckpt``, said on stdout; a DataError listing what
    the directory holds when it has none."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_dir():
        raise DataError(f"ckpt={path} is neither a file nor a directory")

    def newest(paths):
        files = [p for p in paths if p.is_file()]
        return max(files, key=lambda p: p.stat().st_mtime) if files else None

    for folder in (path / "checkpoints", path):
        for pattern, why in (
            ("best-*.ckpt", "its newest best checkpoint"),
            ("last.ckpt", "its last checkpoint"),
            ("*.ckpt", "its newest checkpoint"),
        ):
            found = newest(folder.glob(pattern))
            if found is not None:
                print(f"ckpt={path} is a directory: using {why}, {found}")
                return found
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(held[:12]) + (f", ... ({len(held)} entries)" if len(held) > 12 else "") if held else "nothing"
    raise DataError(
        f"ckpt={path} is a directory without a checkpoint (looked for checkpoints/best-*.ckpt, "
        f"checkpoints/last.ckpt and *.ckpt); it holds: {shown}"
    )


def with_overrides(data: dict, overrides: list[str]) -> dict:
    """``data`` (a checkpoint's data config) with ``data.*=...`` overrides; a key it does not have is
    refused (OmegaConf's struct error) unless written ``+data.key=...``."""
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create({"data": data})
    OmegaConf.set_struct(cfg, True)  # data.rooot=... is an error, not a new key nobody reads
    for override in overrides:
        key, value = override.split("=", 1)
        if key.startswith("+"):
            with open_dict(cfg):
                cfg.merge_with_dotlist([f"{key[1:]}={value}"])
        else:
            cfg.merge_with_dotlist([override])
    return OmegaConf.to_container(cfg.data, resolve=True)


def class_names_of(config: dict) -> list[str] | None:
    """The class names the checkpoint's training used (its config), or None when it names none."""
    data = config.get("data") or {}
    names = data.get("class_names") or data.get("classes")
    return [str(n) for n in names] if isinstance(names, list) and names else None


def check_data_fits(ckpt: Path, config: dict, data: dict) -> None:
    """Refuse, in one line naming both, data that has no target for the checkpoint's task."""
    from .data import DATASETS

    task, trained = config["task"]["name"], (config.get("data") or {}).get("name")
    tasks = DATASETS.fact(data["name"], "tasks", None) if data.get("name") in DATASETS else None
    if tasks is None or get_task(task).fits_data(DATASETS.facts(data["name"])):
        return
    kind = f"{tasks[0]} data (task {tasks[0]})" if len(tasks) == 1 else f"2D image data (tasks {', '.join(tasks)})"
    raise ConfigError(
        f"ckpt {ckpt} is a {task} model trained on data={trained}; data={data['name']} is {kind}\n"
        f"evaluate it on {task} data: leave out data= to use data={trained}, the checkpoint's own"
    )


def check_save_dir(save_dir, data: dict) -> Path | None:
    """``save_dir`` created and writable (a probe file), and not inside the dataset; before any model is built."""
    if not save_dir:
        return None
    from .runs import check_writable

    save, root = Path(save_dir).expanduser(), data.get("root")
    if root:
        root_path, target = Path(root).expanduser().resolve(), save.resolve()
        if target == root_path or root_path in target.parents:
            raise ConfigError(
                f"save_dir={save_dir} is inside the dataset data.root={root}: panels would be mixed "
                f"with the data; choose a directory outside it"
            )
    return check_writable(save, "save_dir")


def check_options(task_cls, opts: dict) -> None:
    """Refuse the options this checkpoint's task does not use (the caller would believe they applied), and
    sizes of the wrong dimensionality."""
    task, dims = task_cls.name, task_cls.dims
    foreign = sorted(
        k for other, keys in TASK_OPTIONS.items() if other != task for k in keys if opts.get(k) not in (None, "config")
    )
    if foreign:
        owners = sorted(other for other, keys in TASK_OPTIONS.items() if set(foreign) & set(keys))
        raise ConfigError(f"{foreign} apply to {', '.join(owners)} checkpoints; this one is task={task}")
    slide = {"mode": opts.get("mode", "whole") != "whole", "stride": opts.get("stride") is not None}
    if len(task_cls.inputs) == 2:  # frame pairs: run whole
        unused, why = {**slide, "crop": opts.get("crop") is not None}, "pairs run whole"
    elif dims == 3:  # volumes: always by sliding window (crop = its windows); panels are 2D
        unused = {**slide, "scales": list(opts.get("scales") or [1.0]) != [1.0], "save_dir": bool(opts.get("save_dir"))}
        why = "volumes run by sliding window over crop=[D,H,W] windows; save_dir panels are 2D"
    else:
        unused, why = {}, ""
    given = [k for k, v in unused.items() if v]
    if given:
        raise ConfigError(f"{', '.join(given)}: not an option for a task={task} checkpoint ({why})")
    for key in ("crop", "stride"):
        if opts.get(key) is not None and len(opts[key]) != dims:
            axes = "[D, H, W]" if dims == 3 else "[H, W]"
            raise ConfigError(
                f"{key}={format_value(opts[key])}: expected {dims} sizes {axes} for this {task} "
                f"checkpoint, got {len(opts[key])}"
            )
    if opts.get("scales") == "auto" and len(task_cls.inputs) != 2:
        raise ConfigError(
            f"scales=auto: only for flow checkpoints (pairs run at the training frame size); this one is "
            f"task={task}: give a list of factors, e.g. scales=[0.75,1.0,1.25]"
        )
    allowed = sorted(BASELINES.get(task, {}))
    for baseline in baseline_names(opts):
        if baseline not in allowed:  # SystemExit: the message scripts and tests know
            raise SystemExit(f"baseline must be {' or '.join(allowed) or 'unset'} for {task}, got {baseline!r}")


def baseline_names(opts: dict) -> list[str]:
    """``baseline``: unset, one name, a comma-separated text (``zero,dis``) or a list: the names, in order,
    each once."""
    given = opts.get("baseline")
    if given is None:
        return []
    parts = given.split(",") if isinstance(given, str) else [str(g) for g in given]
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def prepare(opts: dict, data: dict | None, data_overrides: list[str]) -> tuple[Path, dict, dict, Path | None]:
    """Everything checked before a model is built: (checkpoint file, its run config, the evaluation data
    config, the save directory or None). ``data``: a composed ``data=<name>`` config, or None for the
    checkpoint's own with ``data_overrides`` applied."""
    ckpt = resolve_checkpoint(opts["ckpt"])
    config = checkpoint_config(read_checkpoint(ckpt, weights=False), ckpt)  # no weights read yet
    task_cls = get_task(config["task"]["name"])
    check_options(task_cls, opts)
    data = with_overrides(config["data"], data_overrides) if data is None else data
    check_data_fits(ckpt, config, data)
    predicts, given = (config.get("data") or {}).get("num_classes"), data.get("num_classes")
    if predicts and isinstance(given, int) and given != predicts:
        raise ConfigError(
            f"ckpt {ckpt} predicts {predicts} classes (trained on data={config['data'].get('name')}); "
            f"data.num_classes={given} (data={data.get('name')})"
        )
    # the data config's values, typed as for training (the checkpoint's task picks 2D / 3D sizes)
    validate_config({"task": {"name": task_cls.name}, "data": data}, groups=("data",), check_files=False)
    return ckpt, config, data, check_save_dir(opts.get("save_dir"), data)


def check_classes(ckpt: Path, config: dict, data: dict, dataset) -> tuple[int, list[str]]:
    """(number of classes, their names) of the evaluation data, refused in one line when the count differs
    from what the checkpoint predicts. The data's own list wins for names (classes.txt, dataset.json)."""
    trained = config.get("data") or {}
    predicts = trained.get("num_classes") or len(class_names_of(config) or [])
    names = getattr(dataset, "class_names", None) or data.get("class_names")
    names = [str(n) for n in names] if names else None
    count = data.get("num_classes") or (len(names) if names else None) or predicts
    if count != predicts:
        shown = f": {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}" if names else ""
        raise ConfigError(
            f"ckpt {ckpt} predicts {predicts} classes (trained on data={trained.get('name')}); data={data['name']} "
            f"has {count} classes{shown}\nevaluate it on data with the same classes (the checkpoint's own: leave "
            f"out data=)"
        )
    if names is None or len(names) != count:
        names = class_names_of(config) or [str(i) for i in range(count)]
    training = class_names_of(config)
    if training and names != training:
        print(f"note: data={data['name']} names its classes {names}; the training named them {training}")
    return count, names


# -- wrapping and validating ------------------------------------------------------------------------------
def wrap(task_cls, model: nn.Module, opts: dict, config: dict | None = None) -> nn.Module:
    """The model as the options ask: flow pairs by ``FlowTTA`` (``scales=auto``: at the training frame size
    of the checkpoint's ``config``); volumes flip-averaged over the three axes (the task's own sliding window
    runs the windows); images optionally by sliding window, then averaged over ``scales`` and the horizontal
    flip (logits in probability space)."""
    flip = bool(opts["flip"])
    if len(task_cls.inputs) == 2 and opts["scales"] == "auto":
        size = training_frame_size(config or {})
        if size is None:
            raise ConfigError(
                "scales=auto: the checkpoint's data config has neither data.size nor data.augment.crop, so the "
                "training frame size is unknown; give scales=[<factor>] instead"
            )
        return FlowTTA(model, scales="auto", flip=flip, train_size=size)
    scales = tuple(opts["scales"])
    if len(task_cls.inputs) == 2:
        return FlowTTA(model, scales=scales, flip=flip)
    classes = task_cls.has_classes  # class logits: averaged as probabilities
    if task_cls.dims == 3:
        return FlipTTA(model, flips=((-3,), (-2,), (-1,)) if flip else (), probabilities=classes)
    if opts["mode"] == "slide":
        if not opts.get("crop"):
            raise ConfigError("mode=slide needs crop=[h,w] (and optionally stride=[h,w])")
        model = SlidingWindow(model, opts["crop"], stride=opts.get("stride"))
    return FlipTTA(model, flips=((-1,),) if flip else (), scales=scales, probabilities=classes)


class _Recorder(nn.Module):
    """Keeps the wrapped model's last output, for the panels of ``save_dir``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.last = model, None

    def forward(self, *inputs):
        self.last = self.model(*inputs)
        return self.last


def _panel_saver(save: Path):
    import pytorch_lightning as pl
    from PIL import Image

    class SavePanels(pl.Callback):
        """One PNG per sample (the task's validation panels: image | ground truth | prediction [| error])."""

        seen = 0

        def on_validation_batch_end(self, trainer, task, outputs, batch, batch_idx, dataloader_idx=0):
            pred, n = task.model.last, batch["image"].shape[0]
            shown, task.num_val_images = task.num_val_images, n
            try:
                panels = task.make_panels(pred, batch)
            finally:
                task.num_val_images = shown
            for panel in panels:
                Image.fromarray(panel).save(save / f"{self.seen:05d}.png")
                self.seen += 1

    return SavePanels()


def validate(task, dataset, batch_size: int, device: str = "cpu", precision=None, callbacks=()) -> dict[str, float]:
    """``pl.Trainer.validate`` of ``task`` over ``dataset`` (one process, nothing written): the logged metrics."""
    import pytorch_lightning as pl

    from .data import DenseDataModule
    from .runs import quiet_library_logs

    quiet_library_logs()
    dev = torch.device(device)
    accelerator = {"cpu": "cpu", "cuda": "gpu"}.get(dev.type, dev.type)
    devices = [dev.index] if dev.index is not None else 1
    task.num_val_images = 0  # the panels training logs would be written into the working directory
    datamodule = DenseDataModule(lambda split: dataset, batch_size=batch_size, val_batch_size=batch_size)
    lightning = logging.getLogger("pytorch_lightning")
    level = lightning.level
    lightning.setLevel(logging.WARNING)  # "GPU available: ..." and the tips: not about this evaluation
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            trainer = pl.Trainer(
                accelerator=accelerator,
                devices=devices,
                precision=precision or "32-true",
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                use_distributed_sampler=False,
                callbacks=list(callbacks),
            )
            results = trainer.validate(task, datamodule=datamodule, verbose=False)
    finally:
        lightning.setLevel(level)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def evaluate(opts: dict, data: dict | None = None, data_overrides: list[str] = ()) -> dict[str, float]:
    """Score the checkpoint ``opts["ckpt"]`` (see scripts/evaluate.py) and print the metrics."""
    ckpt, config, data, save = prepare(opts, data, list(data_overrides))
    from .runs import format_metrics

    task_cls = get_task(config["task"]["name"])
    targets = tuple(config["task"].get("targets") or task_cls.targets)
    if task_cls.has_classes:
        print_training_classes(config)
    dataset = eval_dataset(data, opts["split"], targets, task_cls.dims, opts.get("limit"))
    names = None
    run_config = copy.deepcopy(config)
    if task_cls.has_classes:
        count, names = check_classes(ckpt, config, data, dataset)
        data = {**data, "num_classes": count, "class_names": names}
    run_config["data"] = data
    task_cfg = run_config["task"]
    for key, metric_key in TASK_OPTIONS.get(task_cls.name, {}).items():
        value = opts.get(key)
        if key == "eval_crop" and value != "config":
            task_cfg.setdefault("metrics", {})[metric_key] = None if value in (None, "none") else value
        elif key != "eval_crop" and value is not None:
            task_cfg.setdefault("metrics", {})[metric_key] = value
    if task_cls.dims == 3:  # windows: crop, else the task's own (the training patch)
        task_cfg["inference"] = {
            **(task_cfg.get("inference") or {}),
            "roi": opts.get("crop") or (task_cfg.get("inference") or {}).get("roi"),
        }
    with_noc = "noc" in dataset[0]
    model, _ = load_checkpoint_model(ckpt, "cpu")
    task = task_cls.from_config(run_config, model=model, class_names=names, with_noc=with_noc)
    task.model = _Recorder(wrap(task_cls, task.model, opts, config))
    batch_size = int(opts.get("batch_size") or data.get("val_batch_size") or data.get("batch_size") or 1)
    dev = torch.device(opts["device"])
    precision = (config.get("trainer") or {}).get("precision") if dev.type != "cpu" else None
    callbacks = [_panel_saver(save)] if save else []
    metrics = validate(task, dataset, batch_size, opts["device"], precision, callbacks)
    split = opts["split"]
    results = {f"{split}/{k.removeprefix('val/')}": v for k, v in metrics.items()}
    unit = "volumes" if task_cls.dims == 3 else "pairs" if len(task_cls.inputs) == 2 else "images"
    how = (
        f"sliding window {task_cfg['inference'].get('roi') or 'whole'}, overlap "
        f"{task_cfg['inference'].get('overlap', 0.5)}, gaussian, flip={opts['flip']}"
        if task_cls.dims == 3
        else f"mode={opts['mode']}, flip={opts['flip']}, scales={opts['scales']}"
    )
    ran_at = getattr(task.model.model, "last_size", None) if opts["scales"] == "auto" else None
    if ran_at is not None:  # which size "auto" chose (from the image size and the training frames)
        how += f" -> the last pair ran at {ran_at[0]}x{ran_at[1]}, training frames {task.model.model.train_size}"
    print(f"{len(dataset)} {unit} from data={data['name']} split={split} ({how})")
    if task_cfg.get("metrics"):
        print(f"task.metrics: {task_cfg['metrics']}")
    print(format_metrics(results))
    columns = {"model": {k.removeprefix(f"{split}/"): v for k, v in results.items()}}
    chosen = baseline_names(opts)
    for name in chosen:
        baseline, what, extra = BASELINES[task_cls.name][name](data, targets, opts)
        base_task = task_cls.from_config(run_config, model=baseline, class_names=names, with_noc=with_noc)
        scores = validate(base_task, dataset, batch_size, opts["device"], precision)
        scores = {k.removeprefix("val/"): v for k, v in scores.items()}
        prefix = "baseline/" if len(chosen) == 1 else f"baseline/{name}/"  # one baseline: the keys as always
        native = " (run at the native size, no TTA)" if len(task_cls.inputs) == 2 else ""
        print(f"\nBaseline {name}: {what}{native}")
        results.update({f"{prefix}{k}": v for k, v in {**scores, **extra}.items()})
        columns[name] = scores
    if chosen:
        print("\nSide by side (same data, same validation; 'absent': no pixel in that bin, nothing averaged)")
        print(side_by_side(columns))
    return results


def side_by_side(columns: dict[str, dict[str, float]]) -> str:
    """One text table, a column per scored model (the checkpoint, then each baseline), a row per metric any
    of them reported (headline metrics first). A metric a model did not report -- e.g. the EPE of a motion
    bin without pixels, which validation leaves out rather than averaging over nothing -- shows 'absent'."""
    keys = list(dict.fromkeys(k for scores in columns.values() for k in scores))
    keys.sort(key=lambda k: ("/" in k, k))
    width = max([len(k) for k in keys] + [6])
    cols = [max(len(name), 10) for name in columns]
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{name:>{c}}" for name, c in zip(columns, cols))]
    lines.append(f"{'-' * width}  " + "  ".join("-" * c for c in cols))
    for key in keys:
        cells = [
            f"{scores[key]:>{c}.4f}" if key in scores else f"{'absent':>{c}}"
            for scores, c in zip(columns.values(), cols)
        ]
        lines.append(f"{key:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def print_training_classes(config: dict) -> None:
    data = config.get("data") or {}
    names = class_names_of(config)
    count = data.get("num_classes") or (len(names) if names else None)
    if names:
        print(f"classes of the training (data={data.get('name')}, {len(names)}): {', '.join(names)}")
    elif count:
        print(
            f"classes of the training (data={data.get('name')}): {count}, unnamed in the checkpoint's config "
            f"(0..{count - 1})"
        )
