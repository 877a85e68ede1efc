"""What ``python scripts/export.py ckpt=... [key=value ...]`` does, Hydra-free: check the options of
conf/export.yaml, check the output location, rebuild the model from the checkpoint, re-parameterise,
export, and check the file against eager at the export size and a second one.

``export_options(config)`` takes the plain config Hydra composed from conf/export.yaml and the command line
and returns the checked options (a ``ConfigError`` naming the first wrong one: ``dynamic=yes: expected true
or false, got 'yes'``); ``export_checkpoint(options)`` runs the export, prints what it did and returns a
report dict (``task``, ``format``, ``output``, ``reparameterize``, ``dynamic_hw``, ``parity``,
``parity_other_size`` when dynamic, ``ok``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..builder import load_checkpoint_model
from ..config_types import boolean, check_script_options, choice, integer, nullable, string
from ..errors import DataError
from .common import PARITY_ATOL, check_output_path, example_inputs_for, reparameterize
from .onnx import export_onnx, onnx_metadata
from .parity import check_parity
from .torchscript import export_torchscript, torchscript_metadata

__all__ = ["OPTIONS", "export_checkpoint", "export_options", "output_path"]

SUFFIX = {"onnx": ".onnx", "torchscript": ".ts"}
USAGE = "usage: python scripts/export.py ckpt=<path> [key=value ...] (options: conf/export.yaml)"
# The type of each option of conf/export.yaml. Hydra reads the command line as YAML-like values; booleans
# are true/false only (Hydra leaves yes/on/1 as a string or an int, which these rules refuse).
OPTIONS = {
    "ckpt": string("a checkpoint file"),
    "format": choice(*SUFFIX),
    "output": nullable(string("a file path")),
    "height": integer(1, what="a positive integer"),
    "width": integer(1, what="a positive integer"),
    "dynamic": boolean(),
    "reparameterize": boolean(),
    "device": string("a torch device (cpu, cuda)"),
    "opset": integer(7, what="an ONNX opset >= 7"),
    "dynamo": boolean(),
    "repeats": integer(0, what="an integer >= 0"),
    "threads": nullable(integer(1, what="a positive integer")),
    "depth": nullable(integer(1, what="a positive integer")),
}
# Paths and devices are text: a file Hydra reads as a boolean or a number (ckpt=true, output=17) is taken
# as the text of that value; quote it to keep another spelling (output='1e3').
TEXT = ("ckpt", "output", "device")


def export_options(config: dict) -> dict:
    """The checked options: every key of ``OPTIONS`` with a value of its type (``ConfigError`` otherwise,
    naming the first wrong key and listing the others)."""
    return check_script_options(config, OPTIONS, required={"ckpt": "path"}, text=TEXT, usage=USAGE)


def output_path(opts: dict) -> Path:
    """Where the export goes (default: beside the checkpoint), checked writable before any model is built."""
    ckpt = Path(opts["ckpt"]).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}" + (" (a directory)" if ckpt.is_dir() else ""))
    output = Path(opts["output"]).expanduser() if opts["output"] else ckpt.with_suffix(SUFFIX[opts["format"]])
    return check_output_path(output, inputs=(ckpt,), what="output")


def export_checkpoint(opts: dict) -> dict:
    """Check the output location, load, (re-parameterise,) export, check; returns the report (also printed).
    A file that does not match eager is a ``DataError`` after the differences are printed."""
    output = output_path(opts)
    try:
        model, config = load_checkpoint_model(opts["ckpt"], opts["device"])
    except ValueError as err:  # not a densekit checkpoint, unreadable, does not match its config
        raise DataError(str(err)) from None
    task = config["task"]["name"]
    inputs = example_inputs_for(config, opts["height"], opts["width"], depth=opts["depth"])
    device_inputs = tuple(x.to(opts["device"]) for x in inputs)
    report: dict = {"task": task, "format": opts["format"], "output": str(output)}
    if opts["reparameterize"]:
        info: dict = {}
        model = reparameterize(model, device_inputs, report=info)
        report["reparameterize"] = info
        print(
            f"re-parameterised {info['fused_modules']} modules: params {info['params_before'] / 1e6:.3f} M "
            f"-> {info['params_after'] / 1e6:.3f} M, max abs diff to the un-fused model "
            f"{info['max_abs_diff']:.2e}"
        )
    if opts["format"] == "onnx":
        export_onnx(
            model,
            output,
            device_inputs,
            dynamic_hw=opts["dynamic"],
            opset=opts["opset"],
            task=task,
            dynamo=opts["dynamo"],
        )
        meta = onnx_metadata(output)
    else:
        export_torchscript(model, output, device_inputs, task=task, dynamic_hw=opts["dynamic"])
        meta = torchscript_metadata(output)
    model = model.cpu()
    report["dynamic_hw"] = bool(meta.get("dynamic_hw"))
    print(
        f"task={task}: exported {opts['format']} to {output} ({output.stat().st_size / 2**20:.1f} MiB), "
        f"size {opts['height']}x{opts['width']}, dynamic height/width: {report['dynamic_hw']}"
    )
    threads = opts["threads"] or torch.get_num_threads()
    parity = check_parity(model, output, inputs, repeats=opts["repeats"], threads=threads)
    report["parity"] = parity
    ok = parity["max_abs_diff"] <= PARITY_ATOL * max(1.0, parity["max_abs_ref"])
    print(
        f"max abs diff to eager at {opts['height']}x{opts['width']}: {parity['max_abs_diff']:.2e} "
        f"({'OK' if ok else 'MISMATCH'}; outputs up to {parity['max_abs_ref']:.3g})"
    )
    if report["dynamic_hw"]:
        h2, w2 = opts["height"] * 3 // 4 + 5, opts["width"] * 3 // 4 + 3  # not a multiple of any stride
        other = example_inputs_for(config, h2, w2, depth=opts["depth"], seed=1)
        second = check_parity(model, output, other, repeats=0, threads=threads)
        report["parity_other_size"] = {"size": [h2, w2], **second}
        ok = ok and second["max_abs_diff"] <= PARITY_ATOL * max(1.0, second["max_abs_ref"])
        print(f"max abs diff to eager at {h2}x{w2}: {second['max_abs_diff']:.2e}")
    if opts["repeats"]:
        name = "ONNX Runtime" if parity["runtime"] == "onnxruntime" else "TorchScript"
        print(
            f"latency (median of {opts['repeats']}, {threads} threads, CPU): "
            f"eager {parity['eager_ms']:.1f} ms "
            f"| {name} {parity['exported_ms']:.1f} ms | speedup {parity['speedup']:.2f}x"
        )
    report["ok"] = ok
    if not ok:
        raise DataError(f"{output} does not match the eager model (see the differences above)")
    return report
