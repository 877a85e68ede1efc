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
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from densekit.data import build_dataset  # noqa: E402
from densekit.inference import load_checkpoint_model, predict  # noqa: E402
from densekit.metrics import DepthMetrics, FlowMetrics, SegMetrics, VolumeMetrics  # noqa: E402
from densekit.train import format_metrics, split_data_config  # noqa: E402
from densekit.viz import depth_panel, flow_panel, seg_panel  # noqa: E402

DEFAULTS = {"split": "val", "mode": "whole", "crop": None, "stride": None, "flip": False, "scales": [1.0],
            "save_dir": None, "batch_size": 1, "limit": None, "device": "cpu"}
DEPTH_DEFAULTS = {"eval_crop": "config", "min_depth": None, "max_depth": None, "median_scaling": None,
                  "baseline": None}  # baseline also for flow (baseline=zero)
def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    opts, data_overrides = dict(DEFAULTS), []
    for arg in argv:
        if "=" not in arg:
            raise SystemExit(f"arguments are key=value; got {arg!r}\n\n{__doc__}")
        key, value = arg.split("=", 1)
        if key == "data" or key.startswith("data."):
            data_overrides.append(arg)
        elif key == "ckpt" or key in DEFAULTS or key in DEPTH_DEFAULTS:
            opts[key] = yaml.safe_load(value)
        else:
            raise SystemExit(
                f"unknown option {key!r}; expected ckpt, data, data.*, or one of {sorted(DEFAULTS | DEPTH_DEFAULTS)}"
            )
    if "ckpt" not in opts:
        raise SystemExit(f"missing ckpt=<path>\n\n{__doc__}")
    return opts, data_overrides


def data_config(ckpt_config: dict, overrides: list[str]) -> dict:
    if not any(o.startswith("data=") for o in overrides):
        cfg = OmegaConf.create({"data": ckpt_config["data"]})
        cfg.merge_with_dotlist(overrides)
        return OmegaConf.to_container(cfg.data, resolve=True)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return OmegaConf.to_container(cfg.data, resolve=True)


def evaluate(opts: dict, data_overrides: list[str]) -> dict[str, float]:
    model, config = load_checkpoint_model(opts["ckpt"], opts["device"])
    task = config["task"]["name"]
    depth_opts = {k: opts[k] for k in DEPTH_DEFAULTS if k in opts and not (task == "flow" and k == "baseline")}
    if task != "depth" and depth_opts:
        raise SystemExit(f"{sorted(depth_opts)} apply to depth checkpoints; this one is task={task}")
    if task == "depth":
        return evaluate_depth(model, config, opts, data_overrides)
    if task == "volume":
        return evaluate_volume(model, config, opts, data_overrides)
    if task == "flow":
        return evaluate_flow(model, config, opts, data_overrides)
    if task != "seg":
        raise SystemExit(f"this checkpoint is for task={task}; evaluate.py handles seg, depth, flow and volume")
    data = class_data_config(config, data_overrides)
    dataset = eval_dataset(data, opts["split"], "mask")
    names = data.get("class_names") or [str(i) for i in range(data["num_classes"])]
    metric = SegMetrics(data["num_classes"], names, data.get("ignore_index", 255))
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(opts["batch_size"]))
    save = Path(opts["save_dir"]) if opts["save_dir"] else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    seen = 0
    for batch in loader:
        image = batch["image"].to(opts["device"])
        probs = predict(model, image, mode=opts["mode"], crop=opts["crop"], stride=opts["stride"],
                        flip=bool(opts["flip"]), scales=tuple(opts["scales"]))
        pred = probs.argmax(1).cpu()
        metric.update(pred, batch["mask"], batch.get("valid"))
        if save:
            for i in range(pred.shape[0]):
                panel = seg_panel(batch["image"][i], batch["mask"][i].numpy(), pred[i].numpy(), data["num_classes"])
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


def class_data_config(config: dict, overrides: list[str]) -> dict:
    """The data config for a class-map task (seg, volume), checked against the checkpoint's class count."""
    data = data_config(config, overrides)
    if data["num_classes"] != config["data"]["num_classes"]:
        raise SystemExit(f"data has {data['num_classes']} classes but the checkpoint predicts {config['data']['num_classes']}")
    return data


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
        raise SystemExit("baseline=train_mean: no valid depth in the train split")
    return total / count


def evaluate_depth(model, config: dict, opts: dict, data_overrides: list[str]) -> dict[str, float]:
    data = data_config(config, data_overrides)
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
    save = Path(opts["save_dir"]) if opts["save_dir"] else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
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


def evaluate_volume(model, config: dict, opts: dict, data_overrides: list[str]) -> dict[str, float]:
    """Whole volumes, sliding-window inference (windows ``crop`` or the training patch, Gaussian blending,
    overlap 0.5; ``flip=true`` also averages the three axis flips), per-case Dice and BraTS regions."""
    from monai.inferers import sliding_window_inference

    data = class_data_config(config, data_overrides)
    dataset = eval_dataset(data, opts["split"], "mask", val_patch=None)  # whole volumes: the window covers them
    roi = tuple(opts["crop"] or data.get("patch") or ())
    metric = VolumeMetrics(data["num_classes"], data.get("labels"), data.get("class_names"))
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


def evaluate_flow(model, config: dict, opts: dict, data_overrides: list[str]) -> dict[str, float]:
    """EPE, 1/3/5 px accuracy and Fl-all over valid pixels (also noc/occ where the data marks occlusion);
    ``flip=true`` averages with the mirrored pair (u negated); ``baseline=zero`` scores zero motion too."""
    data = data_config(config, data_overrides)
    dataset = eval_dataset(data, opts["split"], "flow")
    with_noc = "noc" in dataset[0]
    baseline = opts.get("baseline")
    if baseline not in (None, "zero"):
        raise SystemExit(f"baseline must be zero for flow, got {baseline!r}")
    metric, base = FlowMetrics(with_noc=with_noc), FlowMetrics(with_noc=with_noc) if baseline else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(opts["batch_size"]))
    save = Path(opts["save_dir"]) if opts["save_dir"] else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
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
    main()
