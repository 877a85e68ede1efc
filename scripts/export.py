"""Export a densekit checkpoint to ONNX or TorchScript and check it against the eager model.

    python scripts/export.py ckpt=<path> [format=onnx|torchscript] [output=<file>] [height=512] [width=512]
        [dynamic=true] [reparameterize=true] [device=cpu] [opset=17] [dynamo=false] [repeats=5] [threads=N]
        [depth=D]   (volume checkpoints: the slices of the example volume; default the training patch's)

The task (and so the inputs: image | image1, image2 | volume, and the output: logits | depth | flow) comes
from the checkpoint. The model is re-parameterised (MobileOne/RepMixer branches fused) unless
``reparameterize=false``, exported at height x width (dynamic batch, and dynamic height/width unless
``dynamic=false``), then run on a random test input: the max abs difference to eager (also at a second size
when dynamic) and the eager vs ONNX Runtime (or TorchScript) latency medians are printed. The default output
sits next to the checkpoint: ``<ckpt stem>.onnx`` / ``.ts``.

Checked before the model is loaded: every option's type (booleans are ``true``/``false`` only) and that the
output location is writable (a probe file; an existing output must be replaceable) and is not the checkpoint.
Errors are one line (exit status 2 for a wrong option, 1 for a missing/unreadable/unwritable file);
``debug=true`` shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from densekit.cli import run_script
from densekit.config_schema import boolean, choice, integer, nullable, parse_option, string
from densekit.errors import ConfigError, DataError
from densekit.export import (
    DEFAULT_OPSET,
    PARITY_ATOL,
    check_output_path,
    check_parity,
    example_inputs_for,
    export_onnx,
    export_torchscript,
    onnx_metadata,
    reparameterize,
    torchscript_metadata,
)
from densekit.inference import load_checkpoint_model

DEFAULTS = {"format": "onnx", "output": None, "height": 512, "width": 512, "dynamic": True,
            "reparameterize": True, "device": "cpu", "opset": DEFAULT_OPSET, "dynamo": False, "repeats": 5,
            "threads": None, "depth": None}
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts"}
USAGE = "usage: python scripts/export.py ckpt=<path> [key=value ...] (options: the docstring of scripts/export.py)"
# What each option takes (densekit.config_schema rules): booleans are true/false only.
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
RAW = ("ckpt", "output", "device")  # taken as written: a file called 'true' or '17' stays a path


def parse_value(key: str, text: str):
    # a value YAML cannot read is checked as the plain string (the rule then names what was expected)
    return parse_option(key, text, OPTIONS[key], raw=key in RAW, unparsable="text")


def parse_args(argv: list[str]) -> dict:
    opts = dict(DEFAULTS)
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"arguments are key=value; got {arg!r}\n{USAGE}")
        key, value = arg.split("=", 1)
        if key not in OPTIONS:
            raise ConfigError(f"unknown option {key!r}; expected ckpt or one of {sorted(DEFAULTS)}\n{USAGE}")
        opts[key] = parse_value(key, value)
    if "ckpt" not in opts:
        raise ConfigError(f"missing ckpt=<path>\n{USAGE}")
    return opts


def output_path(opts: dict) -> Path:
    """Where the export goes (default: beside the checkpoint), checked writable before any model is built."""
    ckpt = Path(opts["ckpt"]).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}" + (" (a directory)" if ckpt.is_dir() else ""))
    output = Path(opts["output"]).expanduser() if opts["output"] else ckpt.with_suffix(SUFFIX[opts["format"]])
    return check_output_path(output, inputs=(ckpt,), what="output")


def export(opts: dict) -> dict:
    """Check the output location, load, (re-parameterise,) export, check; returns a report dict (also printed)."""
    output = output_path(opts)
    try:
        model, config = load_checkpoint_model(opts["ckpt"], opts["device"])
    except ValueError as err:
        raise DataError(str(err)) from None
    task = config["task"]["name"]
    inputs = example_inputs_for(config, opts["height"], opts["width"], depth=opts["depth"])
    device_inputs = tuple(x.to(opts["device"]) for x in inputs)
    report: dict = {"task": task, "format": opts["format"], "output": str(output)}
    if opts["reparameterize"]:
        info: dict = {}
        model = reparameterize(model, device_inputs, report=info)
        report["reparameterize"] = info
        print(f"re-parameterised {info['fused_modules']} modules: params {info['params_before'] / 1e6:.3f} M "
              f"-> {info['params_after'] / 1e6:.3f} M, max abs diff to the un-fused model "
              f"{info['max_abs_diff']:.2e}")
    if opts["format"] == "onnx":
        export_onnx(model, output, device_inputs, dynamic_hw=opts["dynamic"], opset=opts["opset"], task=task,
                    dynamo=opts["dynamo"])
        meta = onnx_metadata(output)
    else:
        export_torchscript(model, output, device_inputs, task=task, dynamic_hw=opts["dynamic"])
        meta = torchscript_metadata(output)
    model = model.cpu()
    report["dynamic_hw"] = bool(meta.get("dynamic_hw"))
    print(f"task={task}: exported {opts['format']} to {output} ({output.stat().st_size / 2**20:.1f} MiB), "
          f"size {opts['height']}x{opts['width']}, dynamic height/width: {report['dynamic_hw']}")
    threads = opts["threads"] or torch.get_num_threads()
    parity = check_parity(model, output, inputs, repeats=opts["repeats"], threads=threads)
    report["parity"] = parity
    ok = parity["max_abs_diff"] <= PARITY_ATOL * max(1.0, parity["max_abs_ref"])
    print(f"max abs diff to eager at {opts['height']}x{opts['width']}: {parity['max_abs_diff']:.2e} "
          f"({'OK' if ok else 'MISMATCH'}; outputs up to {parity['max_abs_ref']:.3g})")
    if report["dynamic_hw"]:
        h2, w2 = opts["height"] * 3 // 4 + 5, opts["width"] * 3 // 4 + 3  # not a multiple of any stride
        other = example_inputs_for(config, h2, w2, depth=opts["depth"], seed=1)
        second = check_parity(model, output, other, repeats=0, threads=threads)
        report["parity_other_size"] = {"size": [h2, w2], **second}
        ok = ok and second["max_abs_diff"] <= PARITY_ATOL * max(1.0, second["max_abs_ref"])
        print(f"max abs diff to eager at {h2}x{w2}: {second['max_abs_diff']:.2e}")
    if opts["repeats"]:
        name = "ONNX Runtime" if parity["runtime"] == "onnxruntime" else "TorchScript"
        print(f"latency (median of {opts['repeats']}, {threads} threads, CPU): "
              f"eager {parity['eager_ms']:.1f} ms "
              f"| {name} {parity['exported_ms']:.1f} ms | speedup {parity['speedup']:.2f}x")
    report["ok"] = ok
    if not ok:
        raise DataError(f"{output} does not match the eager model (see the differences above)")
    return report


def main(argv: list[str] | None = None) -> dict:
    return export(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    run_script(main)
