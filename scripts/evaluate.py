"""Evaluate a checkpoint on a dataset split.

    python scripts/evaluate.py ckpt=<path> [data=<name>] [data.root=<path>] [split=val]
        [mode=whole|slide] [crop=[512,512]] [stride=[341,341]] [flip=true] [scales=[0.75,1.0,1.25]]
        [save_dir=<dir>] [batch_size=1] [limit=N] [device=cpu]

``data`` defaults to the checkpoint's own data config; ``data=<name>`` composes conf/data/<name>.yaml
(further ``data.*`` overrides apply). Prints mIoU, mDice, pixel accuracy and per-class IoU; with
``save_dir`` writes one coloured prediction PNG (image | ground truth | prediction) per sample.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from densekit.data import build_dataset  # noqa: E402
from densekit.inference import load_checkpoint_model, predict  # noqa: E402
from densekit.metrics import SegMetrics  # noqa: E402
from densekit.train import format_metrics, split_data_config  # noqa: E402
from densekit.viz import seg_panel  # noqa: E402

DEFAULTS = {"split": "val", "mode": "whole", "crop": None, "stride": None, "flip": False, "scales": [1.0],
            "save_dir": None, "batch_size": 1, "limit": None, "device": "cpu"}
def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    opts, data_overrides = dict(DEFAULTS), []
    for arg in argv:
        if "=" not in arg:
            raise SystemExit(f"arguments are key=value; got {arg!r}\n\n{__doc__}")
        key, value = arg.split("=", 1)
        if key == "data" or key.startswith("data."):
            data_overrides.append(arg)
        elif key == "ckpt" or key in DEFAULTS:
            opts[key] = yaml.safe_load(value)
        else:
            raise SystemExit(f"unknown option {key!r}; expected ckpt, data, data.*, or one of {sorted(DEFAULTS)}")
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
    if config["task"]["name"] != "seg":
        raise SystemExit(f"this checkpoint is for task={config['task']['name']}; evaluate.py handles seg")
    data = data_config(config, data_overrides)
    if data["num_classes"] != config["data"]["num_classes"]:
        raise SystemExit(f"data has {data['num_classes']} classes but the checkpoint predicts {config['data']['num_classes']}")
    name, kwargs, _, lengths = split_data_config(data)
    kwargs.pop("augment", None)  # evaluation never augments
    if lengths.get(opts["split"]):
        kwargs["length"] = lengths[opts["split"]]
    dataset = build_dataset(name, opts["split"], targets=("mask",), **kwargs)
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


def main(argv: list[str] | None = None) -> dict[str, float]:
    opts, data_overrides = parse_args(sys.argv[1:] if argv is None else argv)
    return evaluate(opts, data_overrides)


if __name__ == "__main__":
    main()
