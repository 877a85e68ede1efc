"""Deployment: re-parameterisation, ONNX / TorchScript export, and parity + latency checks against eager.

    model = reparameterize(model, example_inputs)              # fused copy, outputs checked
    export_onnx(model, "model.onnx", (image,), task="seg")     # dynamic batch, height and width
    report = check_parity(model, "model.onnx", (image,))       # max_abs_diff, eager_ms, exported_ms, speedup

Inputs and outputs are named by task (``TASK_IO``): seg ``image -> logits``, depth ``image -> depth``,
flow ``image1, image2 -> flow``, volume ``volume -> logits``. Images are float32 (B, 3, H, W) in [0, 1]
(the model normalises), volumes (B, C, D, H, W); outputs are at the input size, as in eager mode.

Exporter choice: the TorchScript-based ONNX exporter (``torch.onnx.export(dynamo=False)``) by default. Both
it and the torch.export-based one (``dynamo=True``) record the model by running it once, so Python branches
on shapes (DenseModel pads to a multiple of the stride only ``if`` the size is not one) are frozen at the
example size. Tracing at a size that takes the padding branch (an odd size: every stride is even) records
the pad amounts as shape arithmetic, and the graph then serves every size; both exporters are correct that
way (checked at 96x80, 64x64, 70x45 for mci0 + lraspp). A trace at a multiple of the stride drops the pad and
is silently wrong at other sizes (max diff 1e-2) with either exporter. The TorchScript-based one is chosen
because it exported mci0 + lraspp in 2 s against 56 s for dynamo on the same (shared, 2-core) CPU, with the
same parity. ``export_onnx`` verifies the dynamic graph at a second size and falls back to a fixed size with
a warning when the model's shape logic cannot be captured.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# task -> (input names, output name); the number of inputs follows from the task
TASK_IO: dict[str, tuple[tuple[str, ...], str]] = {
    "seg": (("image",), "logits"),
    "depth": (("image",), "depth"),
    "flow": (("image1", "image2"), "flow"),
    "volume": (("volume",), "logits"),
}
DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17; onnxruntime 1.32 runs opsets up to 23
PARITY_ATOL = 1e-4  # float32 exported vs eager, absolute, on outputs of order 1


# -- re-parameterisation --------------------------------------------------------------------------------
def _reparam_modules(model: nn.Module) -> int:
    """Modules with a fusion hook that timm's ``reparameterize_model`` would act on."""
    hooks = ("fuse", "reparameterize", "switch_to_deploy")
    return sum(1 for m in model.modules() if m is not model and any(hasattr(m, a) for a in hooks))


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reparameterize(
    model: nn.Module,
    example_inputs: tuple | None = None,
    atol: float = PARITY_ATOL,
    report: dict | None = None,
) -> nn.Module:
    """A deep copy in eval mode with MobileOne / RepMixer / RepCPE / large-kernel branches fused into single
    convolutions (timm's ``reparameterize_model``: conv+BN folding, RepVGG-style branch sums). Models
    without such branches come back as an unchanged eval-mode copy. The input model is not modified.

    With ``example_inputs`` (a tuple of tensors) the fused copy is run against the original: a max abs
    difference above ``atol * max(1, max|output|)`` is a RuntimeError (fusion changes float rounding only).
    ``report`` (a dict, optional) receives ``fused_modules``, ``params_before``, ``params_after`` and
    ``max_abs_diff`` (None without inputs).
    """
    from timm.utils.model import reparameterize_model

    model = model.eval()
    hooks, before = _reparam_modules(model), _num_params(model)
    fused = copy.deepcopy(model)
    if hooks:
        fused = reparameterize_model(fused, inplace=True)
    fused.eval()
    diff = None
    if example_inputs is not None:
        with torch.no_grad():
            ref, out = model(*example_inputs), fused(*example_inputs)
        diff = float((ref - out).abs().max())
        tol = atol * max(1.0, float(ref.abs().max()))
        if not diff <= tol:
            raise RuntimeError(
                f"re-parameterisation changed the outputs: max abs diff {diff:.3g} > {tol:.3g} "
                f"(inputs {[tuple(x.shape) for x in example_inputs]})"
            )
    info = {"fused_modules": hooks, "params_before": before, "params_after": _num_params(fused),
            "max_abs_diff": diff}
    log.info("reparameterize: %s", info)
    if report is not None:
        report.update(info)
    return fused


# -- the output file ---------------------------------------------------------------------------------------
def check_output_path(path: str | Path, inputs: tuple = (), what: str = "output") -> Path:
    """The file an export will write, checked before any model is built or exported: not one of ``inputs``
    (e.g. the checkpoint it is exported from), not a directory, its directory created and writable (a probe
    file is written and removed) and, if the file exists, replaceable. ``PermissionError`` / ``OSError``
    naming ``what`` otherwise; returns the path."""
    from .errors import ConfigError
    from .runs import check_writable

    path = Path(path).expanduser()
    target = path.resolve()
    for source in inputs:
        if Path(source).expanduser().resolve() == target:
            raise ConfigError(f"{what}={path} is the input {source} itself: the export would overwrite it; "
                              f"choose another {what}=...")
    if path.is_dir():
        raise IsADirectoryError(f"{what}={path} is a directory; give a file name, e.g. {what}={path / 'model.onnx'}")
    blocking = next((p for p in path.parents if p.exists()), None)  # the nearest existing ancestor
    if blocking is not None and not blocking.is_dir():
        raise NotADirectoryError(f"{what}={path}: {blocking} is a file, not a directory")
    check_writable(path.parent, what=what)
    if path.exists():
        try:
            with open(path, "ab"):  # opened for appending, nothing written: the file is unchanged
                pass
        except OSError as err:
            raise PermissionError(f"{what}={path} exists and cannot be replaced ({err.strerror or err}); choose "
                                  f"another {what}=...") from None
    return path


# -- inputs and names --------------------------------------------------------------------------------
def io_names(task: str | None, example_inputs: tuple) -> tuple[tuple[str, ...], str]:
    """(input names, output name) for ``task``; without a task: image / image1,image2 / volume -> output."""
    if task is not None:
        if task not in TASK_IO:
            raise ValueError(f"unknown task {task!r} for export; expected one of {sorted(TASK_IO)}")
        names, out = TASK_IO[task]
        if len(names) != len(example_inputs):
            raise ValueError(
                f"task {task!r} takes {len(names)} input(s) {list(names)}, "
                f"got {len(example_inputs)} example input(s)"
            )
        return names, out
    if len(example_inputs) == 2:
        return TASK_IO["flow"][0], "output"
    if len(example_inputs) == 1:
        return ("volume",) if example_inputs[0].dim() == 5 else ("image",), "output"
    return tuple(f"input{i}" for i in range(len(example_inputs))), "output"


def example_inputs_for(
    config: dict, height: int, width: int, depth: int | None = None, batch: int = 1, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random example inputs for a run config's task: images (B, 3, H, W) in [0, 1] (two for flow), or a
    volume (B, C, D, H, W) with C = ``backbone.in_channels`` and D = ``depth`` (default: the data patch's
    first size, else 32)."""
    task = config["task"]["name"]
    if task not in TASK_IO:
        raise ValueError(f"unknown task {task!r} in the checkpoint config; expected one of {sorted(TASK_IO)}")
    g = torch.Generator().manual_seed(seed)
    if task == "volume":
        channels = int((config.get("backbone") or {}).get("in_channels") or 1)
        patch = (config.get("data") or {}).get("patch")
        d = int(depth or (patch[0] if patch else 32))
        return (torch.rand(batch, channels, d, height, width, generator=g),)
    return tuple(torch.rand(batch, 3, height, width, generator=g) for _ in TASK_IO[task][0])


def _check_inputs(example_inputs) -> tuple[torch.Tensor, ...]:
    if torch.is_tensor(example_inputs):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs or not all(
        torch.is_tensor(x) for x in example_inputs
    ):
        raise TypeError(f"example_inputs must be a tuple of tensors, got {type(example_inputs).__name__}")
    for x in example_inputs:
        if x.dim() not in (4, 5):
            raise ValueError(f"expected inputs (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    return tuple(x.float() for x in example_inputs)


def _resize_spatial(inputs: tuple, sizes: list[int]) -> tuple:
    """The same tensors at other spatial sizes (replicate-padded or cropped at the end of each axis)."""
    out = []
    for x in inputs:
        spatial = list(x.shape[2:])
        pad = []
        for have, want in zip(reversed(spatial), reversed(sizes)):
            pad += [0, max(0, want - have)]
        y = F.pad(x, pad, mode="replicate") if any(pad) else x
        idx = (slice(None), slice(None)) + tuple(slice(0, s) for s in sizes)
        out.append(y[idx].contiguous())
    return tuple(out)


def _trace_sizes(spatial: list[int]) -> list[int]:
    """Odd sizes: no stride (all powers of two) divides them, so every 'pad to a multiple' branch is traced.
    One pixel less than an even size: it pads back to the same multiple, so the trace costs no more."""
    return [s if s % 2 else max(1, s - 1) for s in spatial]


def _probe_sizes(spatial: list[int], avoid: list[int]) -> list[int]:
    """A second size, smaller (cheap) and different from the export and trace sizes, to verify the graph."""
    sizes = []
    for s, a in zip(spatial, avoid):
        p = max(1, s - s // 4 - 1)
        sizes.append(p if p not in (s, a) else s + 3)
    return sizes


@contextmanager
def _quiet_export():
    """The exporters' own deprecation notes and trace warnings (which the size probe makes moot) off."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        yield


# -- ONNX ---------------------------------------------------------------------------------------------------
def ort_session(path: str | Path, threads: int | None = None, optimization: str = "all"):
    """An onnxruntime CPU session. ``threads``: intra-op threads (default torch.get_num_threads(), so eager
    and ORT use the same cores); ``optimization``: "disable" | "basic" | "extended" | "all"."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {sorted(levels)}, got {optimization!r}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[optimization]
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _ort_run(session, inputs: tuple) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f"the ONNX model takes {len(names)} input(s) {names}, got {len(inputs)}")
    return session.run(None, {n: x.detach().cpu().numpy() for n, x in zip(names, inputs)})[0]


def _onnx_export(model, path: Path, inputs: tuple, names, out_name, dynamic: bool, opset: int, dynamo: bool):
    # one set of axis names for all inputs and the output: flow's two frames share H and W, and outputs
    # are at the input size
    spatial_axes = {}
    for name, x in zip(names, inputs):
        axes = {0: "batch"}
        if dynamic:
            axes.update({d: ("depth", "height", "width")[d - x.dim() + 3] for d in range(2, x.dim())})
        spatial_axes[name] = axes
    spatial_axes[out_name] = dict(spatial_axes[names[0]])
    with _quiet_export(), torch.no_grad():
        if dynamo:
            shapes = tuple({d: torch.export.Dim.DYNAMIC for d in spatial_axes[name]} for name in names)
            # the torch.export-based exporter implements opsets >= 18 only
            torch.onnx.export(model, inputs, str(path), input_names=list(names), output_names=[out_name],
                              opset_version=max(opset, 18), dynamo=True, dynamic_shapes=shapes,
                              verbose=False)
        else:
            torch.onnx.export(model, inputs, str(path), input_names=list(names), output_names=[out_name],
                              opset_version=opset, dynamo=False, dynamic_axes=spatial_axes,
                              do_constant_folding=True)


def _tolerance(ref: np.ndarray, atol: float) -> float:
    return atol * max(1.0, float(np.abs(ref).max()))


def _write_metadata(path: Path, meta: dict) -> None:
    import onnx

    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"densekit.{key}", json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def onnx_metadata(path: str | Path) -> dict:
    """The ``densekit.*`` metadata an exported ONNX file carries (task, dynamic_hw, export size, opset)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    prefix = "densekit."
    props = [p for p in proto.metadata_props if p.key.startswith(prefix)]
    return {p.key[len(prefix):]: json.loads(p.value) for p in props}


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_inputs: tuple,
    dynamic_hw: bool = True,
    opset: int = DEFAULT_OPSET,
    task: str | None = None,
    dynamo: bool = False,
    atol: float = PARITY_ATOL,
) -> Path:
    """Export ``model`` (run in eval mode) to an ONNX file; returns the path.

    ``example_inputs``: a tuple of float32 tensors (one per model input; see ``TASK_IO`` for names). The batch
    axis is always dynamic; with ``dynamic_hw`` the spatial axes are too. The model is traced at odd spatial
    sizes (so padding to the stride is recorded as shape arithmetic, see the module docstring), then the file
    is checked at a second size against eager; if the model's shape logic could not be captured (a mismatch
    above ``10 * atol * max(1, max|output|)`` or a runtime error) it is re-exported at the example size with a
    fixed height/width and a warning says so. ``dynamo=True`` uses the torch.export-based exporter instead.
    The file carries ``densekit.*`` metadata: task, dynamic_hw, export_size, opset, exporter.
    """
    inputs = _check_inputs(example_inputs)
    names, out_name = io_names(task, inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    spatial = list(inputs[0].shape[2:])
    dynamic = bool(dynamic_hw)
    if dynamic:
        traced = _trace_sizes(spatial)
        trace_inputs = _resize_spatial(inputs, traced)
        try:
            with torch.no_grad():
                model(*trace_inputs)
        except Exception as err:  # noqa: BLE001 - a model that takes only certain sizes: trace at this one
            log.info("model does not run at %s (%s); tracing at the example size", traced, err)
            trace_inputs = inputs
        _onnx_export(model, path, trace_inputs, names, out_name, True, opset, dynamo)
        reason, session = None, None
        # a second size, and the example size itself unless the trace was taken there
        probes = [_resize_spatial(inputs, _probe_sizes(spatial, list(trace_inputs[0].shape[2:])))]
        probes += [inputs] if trace_inputs is not inputs else []
        for probe in probes:
            try:
                with torch.no_grad():
                    ref = model(*probe).cpu().numpy()
                session = session or ort_session(path)
                got = _ort_run(session, probe)
                diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else None
                if diff is None:
                    reason = f"output shape {got.shape} vs eager {ref.shape}"
                elif not diff <= _tolerance(ref, 10 * atol):
                    # 10x the parity bound: frozen shape logic shows as errors of 1e-2 and more, while float
                    # reordering in deep 3D nets reaches ~1e-4 (revmb3d + revunet3d: 9e-5 on outputs ~1)
                    reason = f"max abs diff {diff:.3g} vs eager"
            except Exception as err:  # noqa: BLE001 - any failure at a probe size means: not dynamic
                reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            if reason:
                break
        if reason:
            warnings.warn(
                f"{type(model).__name__} cannot be exported with dynamic height/width: at the size "
                f"{list(probe[0].shape[2:])} the graph traced at {list(trace_inputs[0].shape[2:])} fails "
                f"({reason}); its shape logic is Python that tracing freezes. Exported with a FIXED size "
                f"{spatial} instead (batch stays dynamic): run it at exactly that size.",
                UserWarning,
                stacklevel=2,
            )
            dynamic = False
    if not dynamic:
        _onnx_export(model, path, inputs, names, out_name, False, opset, dynamo)
    _write_metadata(path, {"task": task, "dynamic_hw": dynamic, "export_size": spatial,
                           "opset": max(opset, 18) if dynamo else opset,
                           "exporter": "dynamo" if dynamo else "torchscript", "inputs": list(names),
                           "output": out_name})
    return path


# -- TorchScript --------------------------------------------------------------------------------------------
def export_torchscript(
    model: nn.Module,
    path: str | Path,
    example_inputs: tuple,
    task: str | None = None,
    dynamic_hw: bool = True,
    atol: float = PARITY_ATOL,
) -> Path:
    """Save a ``torch.jit.trace`` of ``model`` (eval mode) to ``path``; returns the path.

    Trace, not script: timm's ``forward_intermediates`` and our heads use Python (lists of features, kwargs,
    shape checks) that ``torch.jit.script`` rejects, while a trace records the tensor ops that ran, with shape
    arithmetic kept symbolic. As for ONNX the trace is taken at odd spatial sizes so the padding to the stride
    is recorded, then checked at a second size; where the model's shape logic cannot be captured a warning
    says the file holds a fixed-size trace (``dynamic_hw=False``: traced at the example size, no probe). The
    file carries ``densekit.json`` (task, dynamic_hw, size), read
    back with ``torch.jit.load(path, _extra_files={"densekit.json": ""})``.
    """
    inputs = _check_inputs(example_inputs)
    io_names(task, inputs)  # validates the task against the number of inputs
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    spatial = list(inputs[0].shape[2:])
    trace_inputs = _resize_spatial(inputs, _trace_sizes(spatial)) if dynamic_hw else inputs
    try:
        with torch.no_grad():
            model(*trace_inputs)
    except Exception:  # noqa: BLE001 - the model only takes certain sizes
        trace_inputs = inputs
    with _quiet_export(), torch.no_grad():
        traced = torch.jit.trace(model, trace_inputs, check_trace=False)
    dynamic, reason = bool(dynamic_hw), None
    probe_sizes = _probe_sizes(spatial, list(trace_inputs[0].shape[2:]))
    probes = (inputs, _resize_spatial(inputs, probe_sizes)) if dynamic else ()
    for probe in probes:
        try:
            # the profiling executor's first runs per shape are slow (it records, then optimises): not needed
            with torch.no_grad(), torch.jit.optimized_execution(False):
                ref, got = model(*probe), traced(*probe)
            diff = float((ref - got).abs().max()) if ref.shape == got.shape else float("inf")
            if not diff <= atol * max(1.0, float(ref.abs().max())):
                reason = f"max abs diff {diff:.3g} at {list(probe[0].shape[2:])}"
        except Exception as err:  # noqa: BLE001
            reason = f"{type(err).__name__} at {list(probe[0].shape[2:])}: {str(err).splitlines()[0][:200]}"
        if reason:
            break
    if reason:
        with _quiet_export(), torch.no_grad():
            traced = torch.jit.trace(model, inputs, check_trace=False)
        warnings.warn(
            f"{type(model).__name__} cannot be traced for dynamic height/width ({reason}); saved a trace at "
            f"the FIXED size {spatial}: run it at exactly that size.",
            UserWarning,
            stacklevel=2,
        )
        dynamic = False
    meta = {"task": task, "dynamic_hw": dynamic, "export_size": spatial, "method": "torch.jit.trace"}
    with _quiet_export():
        torch.jit.save(traced, str(path), _extra_files={"densekit.json": json.dumps(meta)})
    return path


def torchscript_metadata(path: str | Path) -> dict:
    """The ``densekit.json`` a file from ``export_torchscript`` carries (task, dynamic_hw, size)."""
    extra = {"densekit.json": ""}
    with _quiet_export():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["densekit.json"] or "{}")


# -- parity and latency -------------------------------------------------------------------------------------
def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def latency_pair(eager_fn, exported_fn, repeats: int = 5, warmup: int = 1) -> tuple[float, float]:
    """Median ms of two callables, measured interleaved (one of each per round) so that machine noise hits
    both alike; ``warmup`` rounds first (allocator, ORT's first-run arena and kernel selection)."""
    for _ in range(warmup):
        eager_fn(), exported_fn()
    a, b = [], []
    for _ in range(repeats):
        a.append(_median_ms(eager_fn, 1))
        b.append(_median_ms(exported_fn, 1))
    return statistics.median(a), statistics.median(b)


def check_parity(
    model: nn.Module,
    exported_path: str | Path,
    inputs: tuple,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    optimization: str = "all",
) -> dict:
    """Run the exported file (``.onnx``: onnxruntime CPUExecutionProvider; else ``torch.jit.load``) and the
    eager model on ``inputs``; returns ``{"runtime", "max_abs_diff", "max_abs_ref", "eager_ms",
    "exported_ms", "speedup", "repeats", "threads"}`` (``speedup`` = eager / exported, medians of
    ``repeats`` interleaved runs after ``warmup``; ``repeats=0`` skips timing). Eager and ORT use the same
    number of intra-op threads (``threads``, default torch.get_num_threads()).
    """
    inputs = _check_inputs(inputs)
    path = Path(exported_path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    model = model.eval()
    threads = int(threads or torch.get_num_threads())
    if path.suffix == ".onnx":
        runtime = "onnxruntime"
        session = ort_session(path, threads=threads, optimization=optimization)

        def run_exported():
            return _ort_run(session, inputs)
    else:
        runtime = "torchscript"
        with _quiet_export():
            scripted = torch.jit.load(str(path), map_location="cpu").eval()

        def run_exported():
            with torch.no_grad():
                return scripted(*inputs).numpy()

    def run_eager():
        with torch.no_grad():
            return model(*inputs).cpu().numpy()

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref, got = run_eager(), run_exported()
        if ref.shape != got.shape:
            raise ValueError(f"{path}: exported output shape {got.shape} differs from eager {ref.shape}")
        result = {
            "runtime": runtime,
            "max_abs_diff": float(np.abs(got - ref).max()),
            "max_abs_ref": float(np.abs(ref).max()),
            "output_shape": list(ref.shape),
            "repeats": int(repeats),
            "threads": threads,
        }
        if repeats > 0:
            eager_ms, exported_ms = latency_pair(run_eager, run_exported, repeats, warmup)
            result.update(eager_ms=eager_ms, exported_ms=exported_ms, speedup=eager_ms / exported_ms)
    finally:
        torch.set_num_threads(previous)
    return result


def ort_latency(
    path: str | Path,
    inputs: tuple,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    optimization: str = "all",
) -> float:
    """Median ms of an ONNX file under onnxruntime (CPU) on ``inputs``."""
    session = ort_session(path, threads=threads, optimization=optimization)
    inputs = _check_inputs(inputs)
    for _ in range(warmup):
        _ort_run(session, inputs)
    return _median_ms(lambda: _ort_run(session, inputs), repeats)


__all__ = [
    "DEFAULT_OPSET", "PARITY_ATOL", "TASK_IO", "check_parity", "example_inputs_for", "export_onnx",
    "export_torchscript", "io_names", "onnx_metadata", "ort_latency", "ort_session", "reparameterize",
    "torchscript_metadata",
]
