"""Evaluate a checkpoint on a dataset split with its task's own validation (the task comes from the checkpoint).

    python scripts/evaluate.py ckpt=<path> [data=<name>] [data.root=<path>] [split=val]
        [mode=whole|slide] [crop=[512,512]] [stride=[341,341]] [flip=true] [scales=[0.75,1.0,1.25]]
        [save_dir=<dir>] [batch_size=N] [limit=N] [device=cpu]
    depth only: [eval_crop=eigen_nyu|garg|eigen_kitti|none] [min_depth=1e-3] [max_depth=10]
        [median_scaling=true] [baseline=train_mean]
    flow only: [baseline=zero|dis|zero,dis]   (data=motorcycle: a real stereo pair with ground truth, no
        download); scales=[0.25] runs the pair resized (flow scaled back); scales=auto runs each pair at the
        checkpoint's training frame size (data.size, else data.augment.crop; from the image size alone)

The options and their defaults are conf/eval.yaml's. The checkpoint is rebuilt, its model wrapped for the
test-time augmentation asked for (``densekit.models.wrappers``) and scored by ``pl.Trainer.validate`` with
the task's validation step (``densekit.evaluation``): without options, exactly the training run's numbers.
``data`` defaults to the checkpoint's own data config (``data.*`` overrides apply to it; a key it lacks needs
``+data.key=...``); ``data=<name>`` composes conf/data/<name>.yaml. volume: whole volumes by sliding window
(``crop=[D,H,W]``, default the training patch; ``flip=true`` averages the three axis flips). ``baseline=...``
scores a training-free model by the same validation next to the checkpoint: ``train_mean`` (depth, the mean
valid depth of the train split over ``limit`` samples or 256), ``zero`` (no motion) or ``dis`` (OpenCV DIS)
for flow; several (``baseline=zero,dis``) are scored one after the other and every model's metrics are
printed side by side in one table (flow: EPE per ground-truth motion bin s0-10 / s10-40 / s40+ px too; a bin
without pixels is 'absent', never 0). With ``save_dir`` one PNG per sample (image | ground truth | prediction
[| error]).

``ckpt`` may be a run directory: its newest ``checkpoints/best-*.ckpt``, else ``checkpoints/last.ckpt`` (else
the newest ``*.ckpt`` in it) is used and named. Checked before any model is built: every option's type
(booleans are ``true``/``false`` only), that the data fits the checkpoint's task and classes (one line naming
both), and that ``save_dir`` is writable and not inside the dataset. Errors are one line (exit status 2 for
a wrong option or a mismatch, 1 for a missing/unreadable file); ``debug=true`` shows the traceback. Hydra
writes nothing (no run directory, no .hydra, no log file).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from densekit.cli import hydra_entry, report_errors
from densekit.config_schema import (
    boolean,
    choice,
    int_list,
    integer,
    list_of,
    nullable,
    number,
    one_of,
    parse_option,
    string,
)
from densekit.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
# What each option takes (densekit.config_schema rules); a wrong value is refused in one line naming it.
OPTIONS = {
    "ckpt": nullable(string("a checkpoint file or run directory")),
    "split": string("a split name (train, val, test)"),
    "mode": choice("whole", "slide"),
    "crop": nullable(int_list((2, 3), axes="[H, W] (volumes: [D, H, W])")),
    "stride": nullable(int_list((2, 3), axes="[H, W] (volumes: [D, H, W])")),
    "flip": boolean(),
    "scales": one_of(
        choice("auto"), list_of(number(gt=0), min_len=1, what="a list of scale factors > 0, e.g. [0.75,1.0,1.25]")
    ),
    "save_dir": nullable(string("a directory")),
    "batch_size": nullable(integer(1)),
    "limit": nullable(integer(1)),
    "device": string("a torch device (cpu, cuda, cuda:1)"),
    "eval_crop": nullable(choice("config", "none", "eigen_nyu", "garg", "eigen_kitti")),
    "min_depth": nullable(number(ge=0)),
    "max_depth": nullable(number(gt=0)),
    "median_scaling": nullable(boolean()),
    "baseline": nullable(
        one_of(
            string("train_mean (depth), zero or dis (flow), or several: zero,dis"),
            list_of(string(), min_len=1, what="a list of baseline names, e.g. [zero,dis]"),
        )
    ),
}
RAW = ("ckpt", "save_dir", "split", "device")  # taken as written: a directory called 'true' or '2024' stays one
USAGE = (
    "usage: python scripts/evaluate.py ckpt=<checkpoint or run dir> [data=<name>] [data.*=...] [key=value ...] "
    "(options: conf/eval.yaml and the docstring of scripts/evaluate.py)"
)


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """``key=value`` arguments -> (the options given, typed from their text; the ``data``/``data.*``
    arguments); a ConfigError naming an unknown option or a wrong value."""
    opts, data_args = {}, []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"arguments are key=value; got {arg!r}\n{USAGE}")
        key, value = arg.split("=", 1)
        if key.lstrip("+") == "data" or key.lstrip("+").startswith("data."):
            data_args.append(arg)
        elif key in OPTIONS:
            opts[key] = parse_option(key, value, OPTIONS[key], raw=key in RAW)
        else:
            raise ConfigError(
                f"unknown option {key!r}; expected ckpt, data, data.*, or one of "
                f"{sorted(set(OPTIONS) - {'ckpt'})}\n{USAGE}"
            )
    return opts, data_args


def hydra_overrides(argv: list[str]) -> tuple[dict, list[str], list[str]]:
    """(typed options, the overrides Hydra composes conf/eval.yaml with, the ``data.*`` overrides of the
    checkpoint's own data config). Raw options are quoted for Hydra (a path may hold ``=``); ``data.*``
    goes to Hydra only with ``data=<name>``, else it applies to the checkpoint's data (evaluation)."""
    opts, data_args = parse_args(argv)
    composed = any(a.split("=", 1)[0] == "data" for a in data_args)
    overrides = []
    for arg in argv:
        key, value = arg.split("=", 1)
        if key in RAW:
            quote = "'" if "'" not in value else '"'
            overrides.append(f"{key}={quote}{value}{quote}")
        elif key == "baseline" and "," in value and not value.lstrip().startswith("["):
            overrides.append(f"baseline=[{value}]")  # zero,dis: Hydra refuses a bare comma list as ambiguous
        elif key in OPTIONS or composed:
            overrides.append(arg)
    return opts, overrides, [] if composed else data_args


def run(cfg: DictConfig, opts: dict, data_overrides: list[str]) -> dict[str, float]:
    """Evaluate per the composed conf/eval.yaml, the typed options taking precedence."""
    from densekit.evaluation import evaluate

    plain = OmegaConf.to_container(cfg, resolve=True)
    data = plain.pop("data", None)
    opts = {**{k: plain.get(k) for k in OPTIONS}, **opts}
    if not opts.get("ckpt"):
        raise ConfigError(f"missing ckpt=<path>\n{USAGE}")
    return evaluate(opts, data, data_overrides)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """In-process entry (tests, notebooks): the same options as the command line; returns the metrics."""
    from hydra import compose, initialize_config_dir

    opts, overrides, data_overrides = hydra_overrides(list(sys.argv[1:] if argv is None else argv))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=overrides)
    return run(cfg, opts, data_overrides)


_PARSED: tuple[dict, list[str]] = ({}, [])  # the command line's typed options and held-back data overrides


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    with report_errors():  # a user error: one line on stderr, exit 2 (config) or 1 (data)
        run(cfg, *_PARSED)


def _cli() -> None:
    global _PARSED
    passthrough = [a for a in sys.argv[1:] if a.startswith("-")]  # Hydra's own flags: --help, --cfg=job
    opts, overrides, data_overrides = hydra_overrides([a for a in sys.argv[1:] if not a.startswith("-")])
    _PARSED = (opts, data_overrides)
    sys.argv[1:] = [*passthrough, *overrides]
    _hydra_main()


if __name__ == "__main__":
    hydra_entry(_cli)
