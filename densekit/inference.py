"""Inference: the ``Predictor`` for arbitrary user inputs (images, frame pairs, volumes) from a checkpoint
rebuilt by ``densekit.builder``, with sliding windows and test-time augmentation from
``densekit.models.wrappers`` and each task's own facts and ``postprocess``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .builder import load_checkpoint_model, training_frame_size
from .models.wrappers import FlipTTA, FlowTTA, SlidingWindow
from .tasks import get_task


def _article(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _load_image(source, intensity=None) -> np.ndarray:
    """One image from a path, PIL image, numpy array or tensor -> float32 (H, W, 3) in [0, 1].

    Accepted: (H, W) grey, (H, W, 1), (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped); uint8 (/255), uint16
    (/65535, or by ``intensity``), bool, or float in [0, 1]; tensors CHW (C in 1/3/4) or HWC. Anything else
    is a ValueError that says what came. ``intensity``: the training data's ``IntensityRule``
    (``densekit.data.transforms.intensity``, with the train split's measured range from the checkpoint's config): 16-bit
    images are then scaled exactly as in training, not by the dtype's maximum.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            with Image.open(path) as img:
                img.load()
                source = img.copy()
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None
    if isinstance(source, Image.Image):
        img = source
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img).astype(np.uint16 if img.mode.startswith("I;16") else np.int64)
            if arr.dtype == np.int64:  # 32-bit integer PNGs hold 16-bit values in practice
                if arr.min() < 0 or arr.max() > 65535:
                    raise ValueError(f"integer image values must lie in [0, 65535], got [{arr.min()}, {arr.max()}]")
                arr = arr.astype(np.uint16)
        elif img.mode in ("L", "RGB", "RGBA", "1"):
            arr = np.asarray(img)
        else:
            arr = np.asarray(img.convert("RGBA" if "A" in img.mode else "RGB"))
        source = arr
    if torch.is_tensor(source):
        t = source.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)  # CHW -> HWC
        source = t.numpy()
    arr = np.asarray(source)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(
            f"expected an image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (or CHW tensor), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"the image is empty: shape {arr.shape}")
    arr = arr[..., :3]
    if intensity is not None and arr.dtype in (np.uint8, np.uint16) and intensity.applies_to(arr):
        out = intensity.apply(arr).astype(np.float32)  # float (H, W, 3) in [0, 1]
    elif arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.bool_:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError("the image holds NaN or inf values")
        if out.min() < 0.0 or out.max() > 1.0:
            raise ValueError(
                f"float images must lie in [0, 1], got [{out.min():.4g}, {out.max():.4g}] (divide 0-255 data by 255)"
            )
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}; expected uint8, uint16, bool or float in [0, 1]")
    return np.ascontiguousarray(out)


def _as_list(inputs) -> tuple[list, bool]:
    """Split a batch into single images: a list/tuple, a 4-D array/tensor (B, ...); else one image."""
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise ValueError("got an empty list of images")
        return list(inputs), True
    if (torch.is_tensor(inputs) or isinstance(inputs, np.ndarray)) and inputs.ndim == 4:
        if inputs.shape[0] == 0:
            raise ValueError(f"got an empty batch: shape {tuple(inputs.shape)}")
        return [inputs[i] for i in range(inputs.shape[0])], True
    return [inputs], False


def _same_size_groups(shapes: list, batch_size: int) -> list[list[int]]:
    """Indices in order, cut into runs of at most ``batch_size`` consecutive items of one shape."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    groups: list[list[int]] = []
    for i, shape in enumerate(shapes):
        if groups and len(groups[-1]) < batch_size and shapes[groups[-1][0]] == shape:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class Predictor:
    """A trained densekit model, ready for arbitrary inputs (no Hydra needed).

        predictor = densekit.Predictor.from_checkpoint("outputs/.../best.ckpt")
        labels = predictor.predict("street.jpg")                 # seg: (H, W) int64 class ids
        labels, probs = predictor.predict(img, probabilities=True)  # + (K, H, W) float32
        depth = predictor.predict(img)                            # depth: (H, W) float32 metres
        flow = predictor.predict(frame1, frame2)                  # flow: (H, W, 2) float32 pixels (u, v)
        labels = predictor.predict(volume)                        # volume: (D, H, W) int64 from raw (C, D, H, W)
        picture = predictor.visualize(img)                        # (H, W', 3) uint8

    Images: paths, PIL images, numpy (H, W[, 1|3|4]) uint8/uint16/float in [0, 1], tensors CHW/HWC; any
    size (the model pads to its stride and crops back). A list or a 4-D array is a batch (a list of
    results; 4-D in gives a stacked array out). The data config's ``resize`` (short side used in training)
    is applied and the output resized back, so predictions are at the input size.
    Options: ``mode="slide"`` with ``crop``/``stride`` (sliding window), ``flip=True`` (horizontal flip TTA;
    for flow both frames are flipped and u negated). ``task=`` names the task a call expects: a mismatch
    with the checkpoint is an error naming the checkpoint's task.
    Attributes read from the checkpoint's run config: ``task``, ``data_name`` (the ``data=`` it was trained on),
    ``num_classes`` and ``class_names`` (seg/volume; ``class_names`` is None when training read them from a
    file such as classes.txt), ``config`` (the whole resolved run config).
    """

    def __init__(self, model: nn.Module, config: dict, device: str | torch.device = "cpu", source: str = "model"):
        self.model, self.config, self.source = model.to(device).eval(), config, source
        self.device = torch.device(device)
        self.task = config["task"]["name"]
        self.task_class = get_task(self.task)  # its facts (kind, dims, inputs, output) and postprocess
        data = config.get("data") or {}
        self.num_classes = data.get("num_classes")
        self.class_names = data.get("class_names")
        self.data_name = data.get("name")  # the dataset it was trained on (data=...): which demo data fits
        self.resize = data.get("resize")
        # how training scaled images that are not 8-bit (folder data: data.intensity, its measured range saved)
        self.intensity = None
        if data.get("intensity"):
            from .data.transforms.intensity import IntensityRule

            self.intensity = IntensityRule(data["intensity"])

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", fuse: bool = True) -> Predictor:
        """``fuse``: merge MobileOne/RepMixer training branches into single convolutions (timm's
        reparameterisation; same outputs to ~1e-5, and e.g. 1.7x faster eager inference for mci0)."""
        model, config = load_checkpoint_model(path, device)
        if fuse:
            from .export import reparameterize

            model = reparameterize(model)
        return cls(model, config, device, source=str(path))

    def _check_task(self, task: str | None) -> None:
        if task is not None and task != self.task:
            raise ValueError(
                f"this is {_article(get_task(task).kind)} call (task={task!r}) but {self.source} is a "
                f"task={self.task!r} checkpoint ({self.task_class.kind})"
            )

    def _unused(self, **options) -> list[str]:
        """The options given that this task does not use: refused, not silently ignored (the caller would
        believe the prediction had e.g. flip TTA or a sliding window)."""
        cls = self.task_class
        if cls.dims == 3:
            unused = ("flip", "mode", "crop", "stride", "scales")
        elif len(cls.inputs) == 2:
            unused = ("mode", "crop", "stride", "roi", "probabilities")
        else:
            unused = ("roi",) if cls.has_classes else ("roi", "probabilities")
        return [k for k in unused if options.get(k) not in (None, False, "whole", (1.0,))]

    # -- 2D --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _run_2d(self, x: torch.Tensor, mode, crop, stride, flip, scales=(1.0,)) -> torch.Tensor:
        """(B, 3, H, W) -> (B, K, H, W) outputs at the input size (logits: of the mean TTA probability)."""
        if mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
        if mode == "slide" and not crop:
            raise ValueError("mode='slide' needs crop=[h, w] (and optionally stride=[h, w])")
        h, w = x.shape[-2:]
        if self.resize and min(h, w) != self.resize:
            s = self.resize / min(h, w)
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        model = SlidingWindow(self.model, crop, stride=stride) if mode == "slide" else self.model
        tta = FlipTTA(model, flips=((-1,),) if flip else (), scales=scales, probabilities=self.task_class.has_classes)
        y = tta(x)
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return y

    def predict(
        self,
        inputs,
        image2=None,
        *,
        task: str | None = None,
        probabilities: bool = False,
        mode: str = "whole",
        crop: tuple[int, int] | None = None,
        stride: tuple[int, int] | None = None,
        flip: bool = False,
        scales: tuple[float, ...] | str = (1.0,),
        roi: tuple[int, int, int] | None = None,
        overlap: float = 0.5,
        normalize: bool = True,
        batch_size: int = 1,
    ):
        """Predictions as numpy at the input size (see the class docstring). ``scales``: multi-scale TTA
        (the input resized by each factor, outputs averaged at the input size; 2D tasks); flow also takes
        ``scales="auto"``: each pair runs at the size that fits it inside the training frames (``data.size``,
        else ``data.augment.crop`` of the checkpoint's config; never upscaled), the flow upsampled to the input
        size with its vectors scaled (``densekit.models.wrappers.auto_flow_size``). ``batch_size``: how
        many images of one size go through the network together (a list in: consecutive equal-size ones).
        Volumes: ``roi``/``overlap`` set the sliding window (default: the training patch, Gaussian blending);
        ``normalize`` z-scores each modality over the brain (nonzero voxels) as the training data was — raw
        scanner intensities in."""
        self._check_task(task)
        if isinstance(scales, str):
            if scales != "auto" or len(self.task_class.inputs) != 2:
                raise ValueError(
                    f"scales={scales!r}: a list of factors > 0, or 'auto' for flow checkpoints ({self.source} is "
                    f"task={self.task!r})"
                )
        else:
            scales = tuple(float(v) for v in (scales or (1.0,)))
        self.check_options(
            flip=flip, mode=mode, crop=crop, stride=stride, roi=roi, probabilities=probabilities, scales=scales
        )
        if self.task_class.dims == 3:
            return self._predict_volume(inputs, roi, overlap, probabilities, normalize)
        if len(self.task_class.inputs) == 2:
            if image2 is None:
                raise ValueError(
                    f"{self.source} is {_article(self.task_class.kind)} checkpoint: call predict(image1, image2)"
                )
            return self._predict_flow(inputs, image2, flip, scales, batch_size)
        if image2 is not None:
            raise ValueError(f"image2 is only for flow (frame pairs); {self.source} is a task={self.task!r} checkpoint")
        items, batched = _as_list(inputs)
        arrays = [_load_image(item, self.intensity) for item in items]
        outs = []
        for group in _same_size_groups([a.shape for a in arrays], batch_size):
            x = torch.stack([torch.from_numpy(arrays[i]).permute(2, 0, 1) for i in group]).to(
                self.device
            )  # (B, 3, H, W)
            y = self._run_2d(x, mode, crop, stride, flip, scales).float().cpu()  # (B, K, H, W)
            outs.extend(self.task_class.postprocess(y[j], probabilities=probabilities) for j in range(len(group)))
        return self._collect(outs, inputs, batched)

    def check_options(self, **options) -> None:
        """A ValueError naming the options given that this checkpoint's task does not use."""
        given = self._unused(**options)
        if given:
            raise ValueError(
                f"{', '.join(given)}: not an option for a task={self.task!r} checkpoint "
                f"({self.source}); see Predictor.predict's docstring for what each task takes"
            )

    @staticmethod
    def _collect(outs: list, inputs, batched: bool):
        if not batched:
            return outs[0]
        if isinstance(inputs, (list, tuple)):
            return outs
        if isinstance(outs[0], tuple):
            return tuple(np.stack(parts) for parts in zip(*outs))
        return np.stack(outs)

    @torch.no_grad()
    def _predict_flow(self, image1, image2, flip: bool, scales=(1.0,), batch_size: int = 1):
        items1, batched = _as_list(image1)
        items2, batched2 = _as_list(image2)
        if len(items1) != len(items2) or batched != batched2:
            raise ValueError(f"got {len(items1)} first frames but {len(items2)} second frames; pass pairs")
        if scales == "auto":
            size = training_frame_size(self.config)
            if size is None:
                raise ValueError(
                    f"scales='auto': {self.source}'s data config has neither data.size nor data.augment.crop, so "
                    f"its training frame size is unknown; pass scales=(<factor>,)"
                )
            tta = FlowTTA(self.model, scales="auto", flip=flip, train_size=size)
        else:
            tta = FlowTTA(self.model, scales=scales, flip=flip)
        pairs = []
        for a, b in zip(items1, items2):
            a, b = _load_image(a, self.intensity), _load_image(b, self.intensity)
            if a.shape != b.shape:
                raise ValueError(
                    f"the two frames differ in size: {a.shape[:2]} vs {b.shape[:2]} (H, W); they must match"
                )
            pairs.append((a, b))
        outs = []
        for group in _same_size_groups([a.shape for a, _ in pairs], batch_size):
            ta = torch.stack([torch.from_numpy(pairs[i][0]).permute(2, 0, 1) for i in group]).to(self.device)
            tb = torch.stack([torch.from_numpy(pairs[i][1]).permute(2, 0, 1) for i in group]).to(self.device)
            flow = tta(ta, tb).float().cpu()  # (B, 2, H, W)
            outs.extend(self.task_class.postprocess(flow[j]) for j in range(len(group)))  # (H, W, 2) each
        return self._collect(outs, image1, batched)

    @torch.no_grad()
    def _predict_volume(self, volume, roi, overlap: float, probabilities: bool, normalize: bool = True):
        if isinstance(volume, (str, Path)):
            raise ValueError("pass a volume as an array (C, D, H, W); read NIfTI files with densekit.io.read_nifti")
        arr = volume.detach().cpu().numpy() if torch.is_tensor(volume) else np.asarray(volume)
        channels = (self.config.get("backbone") or {}).get("in_channels")
        if arr.ndim == 3 and channels == 1:
            arr = arr[None]
        if arr.ndim != 4 or (channels and arr.shape[0] != channels) or 0 in arr.shape:
            raise ValueError(f"expected a volume (C={channels}, D, H, W), got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("the volume holds NaN or inf values")
        if normalize:
            from .data.transforms.volume import zscore

            # as in training: per-modality z-score over the brain (voxels nonzero in any modality)
            arr = zscore(arr, (arr != 0).any(axis=0))
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None].to(self.device)  # (1, C, D, H, W)
        roi = tuple(roi or (self.config.get("data") or {}).get("patch") or arr.shape[1:])
        roi = tuple(min(int(r), s) for r, s in zip(roi, arr.shape[1:]))
        logits = SlidingWindow(self.model, roi, overlap=overlap, mode="gaussian", sw_batch_size=1)(x)  # (1, K, D, H, W)
        return self.task_class.postprocess(logits[0].float().cpu(), probabilities=probabilities)

    # -- pictures --------------------------------------------------------------------------------------
    def visualize(self, inputs, image2=None, prediction=None, alpha: float = 0.5, **kw) -> np.ndarray:
        """A picture of the prediction (uint8 HWC): seg class colours over the image | depth image | colour
        map | flow image1 | colour wheel | volume middle axial slice with label colours."""
        from . import viz

        cls = self.task_class
        if cls.dims == 3:
            pred = self.predict(inputs, **kw) if prediction is None else prediction
            arr = np.asarray(inputs)
            z = arr.shape[1] // 2
            sl = arr[0, z]
            span = float(sl.max() - sl.min()) or 1.0
            grey = np.repeat(((sl - sl.min()) / span)[..., None], 3, axis=-1)  # (H, W, 3) in [0, 1]
            return viz.overlay(grey, pred[z], self.num_classes, alpha)
        if len(cls.inputs) == 2:
            pred = self.predict(inputs, image2, **kw) if prediction is None else prediction
            return np.concatenate([viz.to_uint8(_load_image(inputs, self.intensity)), viz.flow_to_color(pred)], axis=1)
        image = _load_image(inputs, self.intensity)
        pred = self.predict(inputs, **kw) if prediction is None else prediction
        if cls.has_classes:
            return viz.overlay(image, pred, self.num_classes, alpha)
        return np.concatenate([viz.to_uint8(image), viz.colorize_depth(pred)], axis=1)
