"""Evaluate a checkpoint on a dataset split (the task comes from the checkpoint).

    python scripts/evaluate.py ckpt=<path> [data=<name>] [data.root=<path>] [split=val]
        [mode=whole|slide] [crop=[512,512]] [stride=[341,341]] [flip=true] [scales=[0.75,1.0,1.25]]
        [save_dir=<dir>] [batch_size=1] [limit=N] [device=cpu]
    depth only: [eval_crop=eigen_nyu|garg|eigen_kitti|none] [min_depth=1e-3] [max_depth=10]
        [median_scaling=true] [baseline=train_mean]
    flow only: [baseline=zero]   (data=motorcycle: a real stereo pair with ground truth, no download);
        scales=[0.25] runs the pair resized (flow scaled back): the scale a model was trained at

``data`` defaults to the checkpoint's own data config; ``data=<name>`` composes conf/data/<name>.yaml
(further ``data.*`` overrides apply). volume: whole volumes by sliding window (``crop=[D,H,W]``, default the
training patch; ``flip=true`` averages the three axis flips), per-class and BraTS-region Dice. seg prints mIoU, mDice, pixel accuracy and per-class IoU; depth
prints AbsRel, SqRel, RMSE, RMSE-log, SILog, log10 and the delta accuracies under the checkpoint's caps
and evaluation crop (overridable). ``baseline=train_mean`` scores a constant prediction, the mean valid
depth of the train split (over ``limit`` samples or 256), next to the model. With ``save_dir`` one PNG per
sample (image | ground truth | prediction [| error]).

``ckpt`` may be a run directory: its newest ``checkpoints/best-*.ckpt``, else ``checkpoints/last.ckpt`` (else
the newest ``*.ckpt`` in it) is used and named. Checked before any model is built: every option's type
(booleans are ``true``/``false`` only), that the data fits the checkpoint's task and classes (one line naming
both), and that ``save_dir`` is writable and not inside the dataset. Errors are one line (exit status 2 for
a wrong option or a mismatch, 1 for a missing/unreadable file); ``debug=true`` shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

from densekit.cli import run_script  # noqa: E402
from densekit.config_schema import (  # noqa: E402
    boolean, choice, format_value, int_list, integer, list_of, nullable, number, parse_option, string,
    validate_config,
)
from densekit.data import DATASETS, DepthDataset, FlowDataset, SegDataset, StereoMotorcycle, SyntheticScenes  # noqa: E402
from densekit.data import build_dataset  # noqa: E402
from densekit.errors import ConfigError, DataError  # noqa: E402
from densekit.inference import load_checkpoint_model, predict  # noqa: E402
from densekit.metrics import DepthMetrics, FlowMetrics, SegMetrics, VolumeMetrics  # noqa: E402
from densekit.train import format_metrics, split_data_config  # noqa: E402
from densekit.viz import depth_panel, flow_panel, seg_panel  # noqa: E402

DEFAULTS = {"split": "val", "mode": "whole", "crop": None, "stride": None, "flip": False, "scales": [1.0],
            "save_dir": None, "batch_size": 1, "limit": None, "device": "cpu"}
DEPTH_DEFAULTS = {"eval_crop": "config", "min_depth": None, "max_depth": None, "median_scaling": None,
                  "baseline": None}  # baseline also for flow (baseline=zero)
# What each option takes (densekit.config_schema rules); a wrong value is refused in one line naming it.
OPTIONS = {
    "ckpt": string("a checkpoint file or run directory"),
    "split": string("a split name (train, val, test)"),
    "mode": choice("whole", "slide"),
    "crop": nullable(int_list((2, 3), axes="[H, W] (volumes: [D, H, W])")),
    "stride": nullable(int_list((2, 3), axes="[H, W] (volumes: [D, H, W])")),
    "flip": boolean(),
    "scales": list_of(number(gt=0), min_len=1, what="a list of scale factors > 0, e.g. [0.75,1.0,1.25]"),
    "save_dir": nullable(string("a directory")),
    "batch_size": integer(1),
    "limit": nullable(integer(1)),
    "device": string("a torch device (cpu, cuda, cuda:1)"),
    "eval_crop": nullable(choice("config", "none", "eigen_nyu", "garg", "eigen_kitti")),
    "min_depth": nullable(number(ge=0)),
    "max_depth": nullable(number(gt=0)),
    "median_scaling": nullable(boolean()),
    "baseline": nullable(string("train_mean (depth) or zero (flow)")),
}
RAW = ("ckpt", "save_dir", "split", "device")  # taken as written: a directory called 'true' or '2024' stays one
USAGE = ("usage: python scripts/evaluate.py ckpt=<checkpoint or run dir> [data=<name>] [data.*=...] [key=value ...] "
         "(options: the docstring of scripts/evaluate.py)")


def parse_value(key: str, text: str):
    """``text`` of ``key=text`` as the option's type; a ConfigError naming the option otherwise."""
    return parse_option(key, text, OPTIONS[key], raw=key in RAW)


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    opts, data_overrides = dict(DEFAULTS), []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"arguments are key=value; got {arg!r}\n{USAGE}")
        key, value = arg.split("=", 1)
        if key == "data" or key.startswith("data."):
            data_overrides.append(arg)
        elif key in OPTIONS:
            opts[key] = parse_value(key, value)
        else:
            raise ConfigError(
                f"unknown option {key!r}; expected ckpt, data, data.*, or one of {sorted(DEFAULTS | DEPTH_DEFAULTS)}"
                f"\n{USAGE}"
            )
    if "ckpt" not in opts:
        raise ConfigError(f"missing ckpt=<path>\n{USAGE}")
    return opts, data_overrides


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
        for pattern, why in (("best-*.ckpt", "its newest best checkpoint"), ("last.ckpt", "its last checkpoint"),
                             ("*.ckpt", "its newest checkpoint")):
            found = newest(folder.glob(pattern))
            if found is not None:
                print(f"ckpt={path} is a directory: using {why}, {found}")
                return found
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(held[:12]) + (f", ... ({len(held)} entries)" if len(held) > 12 else "") if held else "nothing"
    raise DataError(f"ckpt={path} is a directory without a checkpoint (looked for checkpoints/best-*.ckpt, "
                    f"checkpoints/last.ckpt and *.ckpt); it holds: {shown}")


def checkpoint_config(path: Path) -> dict:
    """The run config a densekit checkpoint carries, read without building the model (memory-mapped: the
    weights are not read)."""
    try:
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # not a zip-format file: mmap is not possible, read it whole
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - whatever torch says about a file it cannot read
        raise DataError(f"could not read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    config = (ckpt.get("hyper_parameters") or {}).get("config") if isinstance(ckpt, dict) else None
    if not config or "task" not in config:
        raise DataError(f"{path} is not a densekit checkpoint (no run config in its hyper_parameters)")
    return config


def data_tasks(name: str) -> tuple[str, ...] | None:
    """The tasks a dataset (``data.name``) provides targets for; None when it is not a known reader."""
    cls = DATASETS.get(name)
    if cls is None:
        return None
    if issubclass(cls, SyntheticScenes):
        return ("seg", "depth", "flow")
    if issubclass(cls, (FlowDataset, StereoMotorcycle)):
        return ("flow",)
    if issubclass(cls, DepthDataset):
        return ("depth",)
    if issubclass(cls, SegDataset):
        return ("seg",)
    if cls.__module__.endswith(".volumes"):
        return ("volume",)
    return None


def check_data_fits(ckpt: Path, config: dict, data: dict) -> None:
    """Refuse, in one line naming both, data that has no target for the checkpoint's task."""
    task, trained = config["task"]["name"], (config.get("data") or {}).get("name")
    tasks = data_tasks(data.get("name"))
    if tasks is None or task in tasks:
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
    from densekit.runs import check_writable

    save = Path(save_dir).expanduser()
    root = data.get("root")
    if root:
        root_path = Path(root).expanduser().resolve()
        target = save.resolve()
        if target == root_path or root_path in target.parents:
            raise ConfigError(f"save_dir={save_dir} is inside the dataset data.root={root}: panels would be mixed "
                              f"with the data; choose a directory outside it")
    return check_writable(save, "save_dir")


def class_names_of(config: dict) -> list[str] | None:
    """The class names the checkpoint's training used (its config), or None when it names none."""
    data = config.get("data") or {}
    names = data.get("class_names") or data.get("classes")
    return [str(n) for n in names] if isinstance(names, list) and names else None


def print_training_classes(ckpt: Path, config: dict) -> None:
    data = config.get("data") or {}
    names = class_names_of(config)
    count = data.get("num_classes") or (len(names) if names else None)
    if names:
        print(f"classes of the training (data={data.get('name')}, {len(names)}): {', '.join(names)}")
    elif count:
        print(f"classes of the training (data={data.get('name')}): {count}, unnamed in the checkpoint's config "
              f"(0..{count - 1})")


def data_config(ckpt_config: dict, overrides: list[str]) -> dict:
    """The checkpoint's data config with ``data.*`` overrides (a key it does not have is refused unless
    written ``+data.key=...``), or ``data=<name>`` composed from conf/ with the overrides."""
    if not any(o.startswith("data=") for o in overrides):
        cfg = OmegaConf.create({"data": ckpt_config["data"]})
        OmegaConf.set_struct(cfg, True)  # data.rooot=... is an error, not a new key nobody reads
        for override in overrides:
            key, value = override.split("=", 1)
            if key.startswith("+"):
                with open_dict(cfg):
                    cfg.merge_with_dotlist([f"{key[1:]}={value}"])
            else:
                cfg.merge_with_dotlist([override])
        return OmegaConf.to_container(cfg.data, resolve=True)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return OmegaConf.to_container(cfg.data, resolve=True)


TASK_DIMS = {"seg": 2, "depth": 2, "flow": 2, "volume": 3}


def prepare(opts: dict, data_overrides: list[str]) -> tuple[Path, dict, dict, Path | None]:
    """Everything checked before a model is built: (checkpoint file, its run config, the data config, the
    save directory or None)."""
    ckpt = resolve_checkpoint(opts["ckpt"])
    config = checkpoint_config(ckpt)
    task = config["task"]["name"]
    if task not in TASK_DIMS:
        raise ConfigError(f"ckpt {ckpt} is for task={task}; evaluate.py handles {', '.join(TASK_DIMS)}")
    depth_opts = {k: opts[k] for k in DEPTH_DEFAULTS if k in opts and not (task == "flow" and k == "baseline")}
    if task != "depth" and depth_opts:
        raise ConfigError(f"{sorted(depth_opts)} apply to depth checkpoints; this one is task={task}")
    dims = TASK_DIMS[task]
    for key in ("crop", "stride"):
        if opts.get(key) is not None and len(opts[key]) != dims:
            axes = "[D, H, W]" if dims == 3 else "[H, W]"
            raise ConfigError(f"{key}={format_value(opts[key])}: expected {dims} sizes {axes} for this {task} "
                              f"checkpoint, got {len(opts[key])}")
    baseline, allowed = opts.get("baseline"), {"depth": "train_mean", "flow": "zero"}.get(task)
    if baseline is not None and baseline != allowed:  # SystemExit: the message scripts and tests know
        raise SystemExit(f"baseline must be {allowed}{' for flow' if task == 'flow' else ''}, got {baseline!r}")
    if task == "volume" and opts.get("save_dir"):
        raise ConfigError(f"save_dir={opts['save_dir']}: evaluate.py saves 2D panels (seg, depth, flow); this "
                          f"checkpoint is task=volume")
    data = data_config(config, data_overrides)
    check_data_fits(ckpt, config, data)
    predicts = (config.get("data") or {}).get("num_classes")
    given = data.get("num_classes")
    if task in ("seg", "volume") and predicts and isinstance(given, int) and given != predicts:
        raise ConfigError(f"ckpt {ckpt} predicts {predicts} classes (trained on data={config['data'].get('name')}); "
                          f"data.num_classes={given} (data={data.get('name')})")
    # the data config's values, typed as for training (the checkpoint's task picks 2D / 3D sizes)
    validate_config({"task": {"name": task}, "data": data}, groups=("data",), check_files=False)
    save = check_save_dir(opts.get("save_dir"), data)
    return ckpt, config, data, save


def evaluate(opts: dict, data_overrides: list[str]) -> dict[str, float]:
    ckpt, config, data, save = prepare(opts, data_overrides)
    task = config["task"]["name"]
    if task in ("seg", "volume"):
        print_training_classes(ckpt, config)
    model, config = load_checkpoint_model(ckpt, opts["device"])
    if task == "depth":
        return evaluate_depth(model, config, opts, data, save)
    if task == "volume":
        return evaluate_volume(model, config, opts, data, ckpt)
    if task == "flow":
        return evaluate_flow(model, config, opts, data, save)
    dataset = eval_dataset(data, opts["split"], "mask")
    num_classes, names = check_classes(ckpt, config, data, dataset)
    metric = SegMetrics(num_classes, names, data.get("ignore_index", 255))
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(opts["batch_size"]))
    seen = 0
    for batch in loader:
        image = batch["image"].to(opts["device"])
        probs = predict(model, image, mode=opts["mode"], crop=opts["crop"], stride=opts["stride"],
                        flip=bool(opts["flip"]), scales=tuple(opts["scales"]))
        pred = probs.argmax(1).cpu()
        metric.update(pred, batch["mask"], batch.get("valid"))
        if save:
            for i in range(pred.shape[0]):
                panel = seg_panel(batch["image"][i], batch["mask"][i].numpy(), pred[i].numpy(), num_classes)
                Image.fromarray(panel).save(save / f"{seen + i:05d}.png")
        seen += pred.shape[0]
        if opts["limit"] and seen >= int(opts["limit"]):
            break
    results = {f"{opts['split']}/{k}": v for k, v in metric.compute().items()}
    print(f"{seen} images from data={data['name']} split={opts['split']} (mode={opts['mode']}, flip={opts['flip']}, "
          f"scales={opts['scales']})")
    print(format_metrics(results))
    return results


def depth_metric_options(config: dict, opts: dict) -> dict:
    """The checkpoint's depth-metric settings (caps, crop, median scaling), with command-line overrides."""
    cfg = dict(config["task"].get("metrics") or {})
    if opts.get("eval_crop", "config") != "config":
        cfg["crop"] = None if opts["eval_crop"] in (None, "none") else opts["eval_crop"]
    for key in ("min_depth", "max_depth", "median_scaling"):
        if opts.get(key) is not None:
            cfg[key] = opts[key]
    return cfg


def eval_dataset(data: dict, split: str, target: str, **overrides):
    """``split`` of the dataset a plain data config describes, never augmented, for one task ``target``."""
    name, kwargs, _, lengths = split_data_config(data)
    kwargs.pop("augment", None)  # evaluation never augments
    if lengths.get(split):
        kwargs["length"] = lengths[split]
    kwargs.update(overrides)
    return build_dataset(name, split, targets=(target,), **kwargs)


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


def train_mean_depth(data: dict, limit: int) -> float:
    """Mean valid depth over the first ``limit`` train samples: the constant-prediction baseline."""
    dataset = eval_dataset(data, "train", "depth")
    total, count = 0.0, 0
    for i in range(min(limit, len(dataset))):
        s = dataset[i]
        keep = s["valid"][None] & torch.isfinite(s["depth"]) & (s["depth"] > 0)
        total += float(s["depth"][keep].double().sum())
        count += int(keep.sum())
    if not count:
        raise DataError("baseline=train_mean: no valid depth in the train split")
    return total / count


def evaluate_depth(model, config: dict, opts: dict, data: dict, save: Path | None) -> dict[str, float]:
    metric_cfg = depth_metric_options(config, opts)
    dataset = eval_dataset(data, opts["split"], "depth")
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(opts["batch_size"]))
    metric = DepthMetrics(**metric_cfg)
    baseline, base_metric = opts.get("baseline"), None
    if baseline not in (None, "train_mean"):
        raise SystemExit(f"baseline must be train_mean, got {baseline!r}")
    if baseline:
        mean_depth = train_mean_depth(data, int(opts["limit"] or 256))
        base_metric = DepthMetrics(**metric_cfg)
    seen = 0
    for batch in loader:
        image = batch["image"].to(opts["device"])
        pred = predict(model, image, mode=opts["mode"], crop=opts["crop"], stride=opts["stride"],
                       flip=bool(opts["flip"]), scales=tuple(opts["scales"]), probabilities=False).cpu()
        metric.update(pred, batch["depth"], batch.get("valid"))
        if base_metric is not None:
            base_metric.update(torch.full_like(pred, mean_depth), batch["depth"], batch.get("valid"))
        if save:
            for i in range(pred.shape[0]):
                panel = depth_panel(batch["image"][i], batch["depth"][i, 0].numpy(), pred[i, 0].numpy(),
                                    batch["valid"][i].numpy() if "valid" in batch else None)
                Image.fromarray(panel).save(save / f"{seen + i:05d}.png")
        seen += pred.shape[0]
        if opts["limit"] and seen >= int(opts["limit"]):
            break
    results = {f"{opts['split']}/{k}": v for k, v in metric.compute().items()}
    print(f"{seen} images from data={data['name']} split={opts['split']} (mode={opts['mode']}, flip={opts['flip']}, "
          f"scales={opts['scales']}, crop={metric_cfg.get('crop')}, depth cap {metric_cfg.get('min_depth')}-"
          f"{metric_cfg.get('max_depth')} m, median_scaling={metric_cfg.get('median_scaling', False)})")
    print(format_metrics(results))
    if base_metric is not None:
        base = {f"baseline/{k}": v for k, v in base_metric.compute().items()}
        print(f"\nBaseline: constant {mean_depth:.3f} m (mean valid depth of the train split)")
        print(format_metrics(base))
        results.update(base)
        results["baseline/mean_depth"] = mean_depth
    return results


def evaluate_volume(model, config: dict, opts: dict, data: dict, ckpt: Path) -> dict[str, float]:
    """Whole volumes, sliding-window inference (windows ``crop`` or the training patch, Gaussian blending,
    overlap 0.5; ``flip=true`` also averages the three axis flips), per-case Dice and BraTS regions."""
    from monai.inferers import sliding_window_inference

    dataset = eval_dataset(data, opts["split"], "mask", val_patch=None)  # whole volumes: the window covers them
    num_classes, names = check_classes(ckpt, config, data, dataset)
    roi = tuple(opts["crop"] or data.get("patch") or ())
    # data.labels "auto" (nifti_folder): the convention the reader resolved, e.g. BraTS's from dataset.json
    metric = VolumeMetrics(num_classes, getattr(dataset, "labels", data.get("labels")), names)
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(opts["batch_size"]))
    seen = 0
    for batch in loader:
        x = batch["image"].to(opts["device"])
        window = roi or tuple(x.shape[-3:])

        def run(v):
            return sliding_window_inference(v, window, 1, model, overlap=0.5, mode="gaussian").softmax(1)

        with torch.no_grad():
            probs = run(x)
            if opts["flip"]:
                for axis in (2, 3, 4):
                    probs = probs + run(x.flip(axis)).flip(axis)
                probs = probs / 4
        metric.update(probs.argmax(1).cpu(), batch["mask"], batch.get("valid"))
        seen += x.shape[0]
        if opts["limit"] and seen >= int(opts["limit"]):
            break
    results = {f"{opts['split']}/{k}": v for k, v in metric.compute().items()}
    print(f"{seen} volumes from data={data['name']} split={opts['split']} (sliding window {window}, overlap 0.5, "
          f"gaussian, flip={opts['flip']})")
    print(format_metrics(results))
    return results


@torch.no_grad()
def flow_at_scales(model, a: torch.Tensor, b: torch.Tensor, scales: tuple[float, ...], flip: bool) -> torch.Tensor:
    """Flow at the input size, averaged over input scales (both frames resized by s, the flow resized back
    and its vectors divided by s: a model trained on small frames sees motions in its trained range) and,
    with ``flip``, over the mirrored pair (u negated)."""
    h, w = a.shape[-2:]
    total = None
    for s in scales:
        size = (max(8, round(h * s)), max(8, round(w * s)))
        ra = a if size == (h, w) else F.interpolate(a, size=size, mode="area")
        rb = b if size == (h, w) else F.interpolate(b, size=size, mode="area")
        flow = model(ra, rb)  # (B, 2, h', w') in pixels of the resized frames
        if flip:
            back = model(ra.flip(-1), rb.flip(-1)).flip(-1)
            back[:, 0] = -back[:, 0]  # mirrored x: u changes sign
            flow = (flow + back) / 2
        if size != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([w / size[1], h / size[0]], device=flow.device).view(1, 2, 1, 1)
        total = flow if total is None else total + flow
    return total / len(scales)


def evaluate_flow(model, config: dict, opts: dict, data: dict, save: Path | None) -> dict[str, float]:
    """EPE, 1/3/5 px accuracy and Fl-all over valid pixels (also noc/occ where the data marks occlusion);
    ``flip=true`` averages with the mirrored pair (u negated); ``baseline=zero`` scores zero motion too."""
    dataset = eval_dataset(data, opts["split"], "flow")
    with_noc = "noc" in dataset[0]
    baseline = opts.get("baseline")
    if baseline not in (None, "zero"):
        raise SystemExit(f"baseline must be zero for flow, got {baseline!r}")
    metric, base = FlowMetrics(with_noc=with_noc), FlowMetrics(with_noc=with_noc) if baseline else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(opts["batch_size"]))
    seen = 0
    for batch in loader:
        a, b = batch["image"].to(opts["device"]), batch["image2"].to(opts["device"])
        flow = flow_at_scales(model, a, b, tuple(opts["scales"]), bool(opts["flip"])).float().cpu()
        noc = batch.get("noc") if with_noc else None
        metric.update(flow, batch["flow"], batch.get("valid"), noc)
        if base is not None:
            base.update(torch.zeros_like(flow), batch["flow"], batch.get("valid"), noc)
        if save:
            for i in range(flow.shape[0]):
                panel = flow_panel(batch["image"][i], batch["flow"][i].numpy(), flow[i].numpy(), batch["valid"][i].numpy())
                Image.fromarray(panel).save(save / f"{seen + i:05d}.png")
        seen += flow.shape[0]
        if opts["limit"] and seen >= int(opts["limit"]):
            break
    results = {f"{opts['split']}/{k}": v for k, v in metric.compute().items()}
    print(f"{seen} pairs from data={data['name']} split={opts['split']} (flip={opts['flip']}, scales={opts['scales']})")
    print(format_metrics(results))
    if base is not None:
        zero = {f"baseline/{k}": v for k, v in base.compute().items()}
        print("\nBaseline: zero motion")
        print(format_metrics(zero))
        results.update(zero)
    return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    opts, data_overrides = parse_args(sys.argv[1:] if argv is None else argv)
    return evaluate(opts, data_overrides)


if __name__ == "__main__":
    run_script(main)
