"""What ``python scripts/predict.py ckpt=... input=... output=...`` (``densekit-predict``) does, Hydra-free.

``predict_options(config)`` checks the options of ``densekit.console.PredictConfig`` (a ``ConfigError``
naming the first wrong one); ``run_predict(options)`` rebuilds the model from the checkpoint (the task comes
from it), collects the inputs (``densekit.predict.sources``), checks the output folder before any model
runs (not inside an input folder, no input overwritten, no earlier output replaced unless
``overwrite=true``), predicts with a progress bar and writes the files of ``densekit.predict.outputs``. An
input that cannot be read is skipped, counted and listed at the end (``strict=true`` stops at the first
instead); nothing that was found goes unmentioned.
Returns a report dict (``task``, ``predicted``, ``written``, ``skipped``, ``failed``, ``seconds``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..config_types import boolean, check_script_options, choice, integer, list_of, nullable, number, one_of, string
from ..errors import ConfigError, DataError
from . import outputs
from .sources import Skipped, collect

__all__ = ["OPTIONS", "predict_options", "run_predict"]

USAGE = "usage: python scripts/predict.py ckpt=<ckpt> input=<file|folder|glob|video> output=<dir> [key=value ...]"
POS_INT = integer(1, what="a positive integer")
OPTIONS = {
    "ckpt": string("a checkpoint file"),
    "input": string("a file, folder, glob pattern or video"),
    "output": string("a folder"),
    "format": choice("png", "npy"),
    "depth_scale": number(gt=0, what="a number > 0"),
    "batch_size": POS_INT,
    "device": string("auto, cpu, cuda or cuda:<n>"),
    "mode": choice("whole", "slide"),
    "crop": nullable(list_of(POS_INT, 2)),
    "stride": nullable(list_of(POS_INT, 2)),
    "flip": boolean(),
    "scales": one_of(choice("auto"), list_of(number(gt=0, what="a factor > 0"), min_len=1)),  # auto: flow
    "roi": nullable(list_of(POS_INT, 3)),
    "overlap": number(ge=0, le=0.99, what="a fraction in [0, 0.99]"),
    "backend": choice("torch", "onnx"),
    "onnx": nullable(string("an exported .onnx file")),
    "strict": boolean(),
    "overwrite": boolean(),
    "progress": boolean(),
    "alpha": number(ge=0, le=1, what="a fraction in [0, 1]"),
    "max_flow": nullable(number(gt=0, what="pixels > 0")),
    "fps": nullable(number(gt=0, what="frames per second > 0")),
}
TEXT = ("ckpt", "input", "output", "device", "onnx")


def predict_options(config: dict) -> dict:
    """The checked options (``ConfigError`` naming the first wrong key and listing the others)."""
    required = {"ckpt": "path", "input": "input", "output": "output"}
    opts = check_script_options(config, OPTIONS, required=required, text=TEXT, usage=USAGE)
    if opts["mode"] == "slide" and not opts["crop"]:
        raise ConfigError("mode=slide needs crop=[h,w] (and optionally stride=[h,w])")
    return opts


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA device here (torch {torch.__version__}); use device=cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device={name}: expected auto, cpu, cuda or cuda:<n>")
    return name


def _check_output(out: Path, inputs, planned: list[Path], overwrite: bool) -> None:
    out_r = out.expanduser().resolve()
    if inputs.root is not None:
        root = inputs.root.resolve()
        if out_r == root or root in out_r.parents:
            raise ConfigError(
                f"output={out} is inside the input folder {inputs.root}: a later run would read the outputs as "
                "inputs; choose a folder outside it"
            )
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output={out} is a file; give a folder")
    given = {p.resolve() for p in _input_files(inputs)}
    clash = [p for p in planned if p.resolve() in given]
    if clash:
        raise ConfigError(f"output={out}: {clash[0].name} would overwrite the input {clash[0]}; choose another output")
    existing = [p for p in planned if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"output={out} already holds {len(existing)} of the files this run writes (e.g. {existing[0].name}); "
            "choose another output= or pass overwrite=true"
        )
    from ..runs import check_writable

    out.mkdir(parents=True, exist_ok=True)
    check_writable(out, what="output")


def _input_files(inputs) -> list[Path]:
    if inputs.kind == "volume":
        return [p for _, files in inputs.items for p in files]
    return list(inputs.items)


def _plan(task_kind: str, fmt: str, inputs) -> tuple[dict, list[Path]]:
    """(input -> output name, every output file), before anything runs."""
    key = "depth_npy" if task_kind == "depth" and fmt == "npy" else task_kind
    if inputs.kind == "volume":
        names = {case: case for case, _ in inputs.items}
    elif inputs.kind == "video":  # per-pair names follow the frame index; the mp4 is known up front
        return {}, [Path(f"{inputs.items[0].stem}_flow.mp4")]
    else:
        items = inputs.items[:-1] if task_kind == "flow" else inputs.items  # a pair is named after its first frame
        names = outputs.unique_names(items)
    return names, [Path(n + s) for n in names.values() for s in outputs.SUFFIXES[key]]


def run_predict(opts: dict) -> dict:
    from ..builder import check_version, read_checkpoint
    from ..inference import Predictor

    t0 = time.perf_counter()
    ckpt = Path(opts["ckpt"]).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}" + (" (a directory)" if ckpt.is_dir() else ""))
    note = check_version(read_checkpoint(ckpt, weights=False), ckpt)  # a newer densekit's: refused here
    device = _device(opts["device"])
    predictor = Predictor.from_checkpoint(ckpt, device=device)
    cls = predictor.task_class
    wants = "volume" if cls.dims == 3 else ("pair" if len(cls.inputs) == 2 else "image")
    # which files it writes (densekit.predict.outputs): from the task's facts, not its name
    kind = {"volume": "volume", "pair": "flow"}.get(wants, "seg" if cls.has_classes else "depth")
    tta = dict(flip=opts["flip"], mode=opts["mode"], crop=opts["crop"], stride=opts["stride"], roi=opts["roi"])
    try:
        if opts["scales"] == "auto" and wants != "pair":
            raise ConfigError(f"scales=auto is for flow checkpoints; {ckpt} is task={predictor.task!r}")
        predictor.check_options(**tta, scales=_scales(opts["scales"]))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if opts["format"] == "npy" and kind != "depth":
        raise ConfigError(f"format=npy is for depth checkpoints; {ckpt} is task={predictor.task!r}")
    max_depth = (predictor.config.get("task", {}).get("model") or {}).get("max_depth")
    if kind == "depth" and opts["format"] == "png" and max_depth and max_depth * opts["depth_scale"] > 65535:
        raise ConfigError(
            f"this model predicts up to {max_depth:g} m; a 16-bit PNG at depth_scale={opts['depth_scale']:g} holds "
            f"{65535 / opts['depth_scale']:.4g} m: use format=npy or a smaller depth_scale (e.g. 256, KITTI's)"
        )
    channels = (predictor.config.get("backbone") or {}).get("in_channels") or 1
    inputs = collect(opts["input"], predictor.task, wants, channels)
    if wants == "pair" and inputs.kind == "image" and len(inputs.items) < 2:
        raise DataError(
            f"input={opts['input']}: a flow checkpoint needs at least two frames, found {len(inputs.items)}"
        )
    if not inputs.items:
        listed = "; ".join(f"{s.path.name}: {s.why}" for s in inputs.skipped[:5])
        raise DataError(f"input={opts['input']}: nothing to predict on ({listed})")
    out = Path(opts["output"]).expanduser()
    names, planned = _plan(kind, opts["format"], inputs)
    _check_output(out, inputs, [out / p for p in planned], opts["overwrite"])
    if opts["backend"] == "onnx":
        from .backend import use_onnx

        use_onnx(predictor, opts["onnx"], ckpt, inputs)
    if note:
        print(note)
    run = _Run(predictor, opts, out, names)
    run.go(inputs)
    report = run.report(time.perf_counter() - t0, inputs.skipped)
    return report


def _scales(value):
    """The ``scales`` option as ``Predictor.predict`` takes it: a tuple of factors, or "auto" (flow)."""
    return value if value == "auto" else tuple(value)


class _Run:
    """One prediction pass: the progress bar, the per-item loop, the failures."""

    def __init__(self, predictor, opts: dict, out: Path, names: dict):
        self.p, self.opts, self.out, self.names = predictor, opts, out, names
        self.failed: list[Skipped] = []
        self.written = 0
        self.predicted = 0
        self.kw = dict(flip=opts["flip"], scales=_scales(opts["scales"]), batch_size=opts["batch_size"])
        if predictor.task_class.dims == 2 and len(predictor.task_class.inputs) == 1:
            self.kw.update(mode=opts["mode"], crop=opts["crop"], stride=opts["stride"])

    def _fail(self, path: Path, err: Exception) -> None:
        why = str(err).removeprefix(f"{path}: ")
        if self.opts["strict"]:
            raise DataError(f"{path}: {why} (strict=true: stopped; {self.predicted} predicted before it)") from None
        self.failed.append(Skipped(path, why))

    def _bar(self, total: int, unit: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, unit=unit, disable=not self.opts["progress"], dynamic_ncols=True, leave=True)

    def go(self, inputs) -> None:
        {"image": self._images, "video": self._video, "volume": self._volumes}[inputs.kind](inputs.items)

    def _load(self, path: Path):
        from ..inference import _load_image

        try:
            return _load_image(path, self.p.intensity)
        except (ValueError, OSError) as err:
            self._fail(path, err)
            return None

    def _images(self, paths: list[Path]) -> None:
        if len(self.p.task_class.inputs) == 2:
            return self._pairs(paths)
        bs = self.opts["batch_size"]
        with self._bar(len(paths), "img") as bar:
            for start in range(0, len(paths), bs):
                chunk = [(p, self._load(p)) for p in paths[start : start + bs]]
                chunk = [(p, a) for p, a in chunk if a is not None]
                if chunk:
                    preds = self.p.predict([a for _, a in chunk], **self.kw)
                    for (path, image), pred in zip(chunk, preds):
                        self._write_2d(path, image, pred)
                bar.update(min(bs, len(paths) - start))

    def _write_2d(self, path: Path, image: np.ndarray, pred: np.ndarray) -> None:
        name = self.names[path]
        if self.p.task_class.has_classes:
            outputs.write_seg(self.out, name, image, pred, self.p.num_classes, self.opts["alpha"])
        else:
            outputs.write_depth(self.out, name, pred, self.opts["format"], self.opts["depth_scale"])
        self.written += 2
        self.predicted += 1

    def _pairs(self, paths: list[Path]) -> None:
        with self._bar(len(paths) - 1, "pair") as bar:
            prev = (paths[0], self._load(paths[0]))
            for path in paths[1:]:
                cur = (path, self._load(path))
                if prev[1] is not None and cur[1] is not None:
                    if prev[1].shape != cur[1].shape:
                        self._fail(
                            path,
                            ValueError(
                                f"size {cur[1].shape[:2]} differs from {prev[0].name}'s "
                                f"{prev[1].shape[:2]}; no flow for that pair"
                            ),
                        )
                    else:
                        flow = self.p.predict(prev[1], cur[1], flip=self.kw["flip"], scales=self.kw["scales"])
                        outputs.write_flow(self.out, self.names[prev[0]], flow, self.opts["max_flow"])
                        self.written += 2
                        self.predicted += 1
                prev = cur
                bar.update(1)

    def _video(self, paths: list[Path]) -> None:
        import cv2

        path = paths[0]
        cap = cv2.VideoCapture(str(path))
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            cap.release()
            raise DataError(
                f"{path}: the video cannot be decoded (OpenCV read no frame); convert it, e.g. "
                "ffmpeg -i in.ext -c:v libx264 out.mp4, or extract its frames into a folder"
            )
        fps = self.opts["fps"] or cap.get(cv2.CAP_PROP_FPS) or 25.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        video = outputs.FlowVideo(self.out / f"{path.stem}_flow.mp4", fps)
        prev, index = frame[..., ::-1].copy(), 0  # BGR -> RGB
        try:
            with self._bar(max(total - 1, 0) or None, "pair") as bar:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    cur = frame[..., ::-1].copy()
                    flow = self.p.predict(prev, cur, flip=self.kw["flip"], scales=self.kw["scales"])
                    color = outputs.write_flow(self.out, f"{path.stem}_{index:06d}", flow, self.opts["max_flow"])
                    video.add(color)
                    self.written += 2
                    self.predicted += 1
                    prev, index = cur, index + 1
                    bar.update(1)
        finally:
            cap.release()
            video.close()
        if self.predicted == 0:
            raise DataError(f"{path}: the video holds one decodable frame; flow needs two")
        self.written += 1

    def _volumes(self, cases: list) -> None:
        from ..data.readers.volume import nifti_to_dhw
        from ..io.nifti import read_nifti

        with self._bar(len(cases), "case") as bar:
            for case, files in cases:
                try:
                    arrays, affine = [], None
                    for f in files:
                        array, aff = read_nifti(f)
                        if array.ndim != 3:
                            raise ValueError(f"{f}: expected a 3-D volume, got shape {array.shape}")
                        arrays.append(nifti_to_dhw(array).astype(np.float32))
                        affine = aff if affine is None else affine
                    if len({a.shape for a in arrays}) > 1:
                        raise ValueError(f"the channel files differ in shape: {[a.shape for a in arrays]}")
                    roi = self.opts["roi"]
                    labels = self.p.predict(np.stack(arrays), roi=roi, overlap=self.opts["overlap"])  # (D, H, W)
                except (ValueError, OSError) as err:
                    self._fail(files[0], err)
                else:
                    outputs.write_volume(self.out, self.names.get(case, case), labels, affine)
                    self.written += 1
                    self.predicted += 1
                bar.update(1)

    def report(self, seconds: float, skipped: list[Skipped]) -> dict:
        what = "pair" if len(self.p.task_class.inputs) == 2 else ("case" if self.p.task_class.dims == 3 else "image")
        print(
            f"predicted {self.predicted} {what}(s) with task={self.p.task!r} -> {self.out} "
            f"({self.written} files) in {seconds:.1f} s"
        )
        for title, entries in (("failed (unreadable)", self.failed), ("skipped", skipped)):
            if entries:
                print(f"{title}: {len(entries)}")
                for s in entries:
                    print(f"  {s.path}: {s.why}")
        if self.predicted == 0:
            raise DataError(f"no prediction was made: {len(self.failed)} input(s) failed (listed above)")
        return {
            "task": self.p.task,
            "predicted": self.predicted,
            "written": self.written,
            "failed": [str(s.path) for s in self.failed],
            "skipped": [str(s.path) for s in skipped],
            "seconds": seconds,
            "output": str(self.out),
        }
