"""Inference: rebuild a model from a checkpoint without Hydra, whole-image / sliding-window prediction, TTA,
and the ``Predictor`` for arbitrary user inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .models import create_model


def model_from_config(config: dict, pretrained=False) -> nn.Module:
    """The model a run config describes (plain dict: ``task``, ``backbone``, ``head``, ``data``).

    ``pretrained`` replaces the backbone's own setting (False when rebuilding from a checkpoint, whose
    weights are loaded next); None keeps the config's value.
    """
    task = config["task"]["name"]
    backbone = dict(config["backbone"])
    if pretrained is not None:
        backbone["pretrained"] = pretrained
    kwargs = dict(config["task"].get("model") or {})
    if task in ("seg", "volume"):
        kwargs["num_classes"] = config["data"]["num_classes"]
    return create_model(task, backbone=backbone, head=dict(config["head"]), **kwargs)


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, the run config) from a densekit Lightning checkpoint.

    The checkpoint's hyper-parameters hold the resolved run config; the model is rebuilt from it with
    ``pretrained=False`` (the checkpoint carries the trained weights) and loaded strictly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"could not read checkpoint {path}: {type(err).__name__}: {err}") from err
    config = (ckpt.get("hyper_parameters") or {}).get("config") if isinstance(ckpt, dict) else None
    if not config or "task" not in config:
        raise ValueError(f"{path} is not a densekit checkpoint (no run config in its hyper_parameters)")
    model = model_from_config(config, pretrained=False)
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match its own config: missing {missing[:10]}, unexpected {unexpected[:10]}")
    return model.to(device).eval(), config


@torch.no_grad()
def sliding_window(model: nn.Module, image: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Average the model's outputs over overlapping crops (mmseg's 'slide' mode): (B, K, H, W).

    Windows start every ``stride`` pixels and the last one is flush with the border; images smaller
    than the crop are run whole (the model pads internally).
    """
    b, _, h, w = image.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    sh, sw = stride
    rows = max(math.ceil((h - ch) / sh), 0) + 1
    cols = max(math.ceil((w - cw) / sw), 0) + 1
    out, count = None, image.new_zeros(1, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            y0, x0 = min(r * sh, h - ch), min(c * sw, w - cw)
            pred = model(image[..., y0 : y0 + ch, x0 : x0 + cw])  # (B, K, ch, cw)
            if out is None:
                out = image.new_zeros(b, pred.shape[1], h, w)
            out[..., y0 : y0 + ch, x0 : x0 + cw] += pred
            count[..., y0 : y0 + ch, x0 : x0 + cw] += 1
    return out / count


@torch.no_grad()
def predict(
    model: nn.Module,
    image: torch.Tensor,
    mode: str = "whole",
    crop: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
    probabilities: bool = True,
) -> torch.Tensor:
    """Per-pixel outputs at the input size, averaged over scales and (optionally) horizontal flips.

    For segmentation the average is over softmax probabilities (``probabilities=True``), the usual
    multi-scale + flip TTA; ``mode="slide"`` runs each scale with ``sliding_window(crop, stride)``.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and not crop:
        raise ValueError("mode='slide' needs crop=[h, w] (and optionally stride=[h, w])")
    h, w = image.shape[-2:]
    total = None
    for scale in scales:
        x = image if scale == 1.0 else F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            xi = x.flip(-1) if flipped else x
            if mode == "slide":
                st = stride or (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))
                y = sliding_window(model, xi, tuple(crop), tuple(st))
            else:
                y = model(xi)
            if flipped:
                y = y.flip(-1)
            if y.shape[-2:] != (h, w):
                y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
            y = y.softmax(1) if probabilities else y
            total = y if total is None else total + y
    return total / (len(scales) * (2 if flip else 1))


# -- Predictor ----------------------------------------------------------------------------------------------
_CHECKPOINT_KINDS = {"seg": "segmentation", "depth": "depth", "flow": "optical flow", "volume": "3D volume"}


def _article(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _load_image(source, intensity=None) -> np.ndarray:
    """One image from a path, PIL image, numpy array or tensor -> float32 (H, W, 3) in [0, 1].

    Accepted: (H, W) grey, (H, W, 1), (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped); uint8 (/255), uint16
    (/65535, or by ``intensity``), bool, or float in [0, 1]; tensors CHW (C in 1/3/4) or HWC. Anything else
    is a ValueError that says what came. ``intensity``: the training data's ``IntensityRule``
    (``densekit.data.intensity``, with the train split's measured range from the checkpoint's config): 16-bit
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
        self.model, self.config, self.device, self.source = model.to(device).eval(), config, torch.device(device), source
        self.task = config["task"]["name"]
        data = config.get("data") or {}
        self.num_classes = data.get("num_classes")
        self.class_names = data.get("class_names")
        self.data_name = data.get("name")  # the dataset it was trained on (data=...): which demo data fits
        self.resize = data.get("resize")
        # how training scaled images that are not 8-bit (folder data: data.intensity, its measured range saved)
        self.intensity = None
        if data.get("intensity"):
            from .data.intensity import IntensityRule

            self.intensity = IntensityRule(data["intensity"])

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", fuse: bool = True) -> "Predictor":
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
                f"this is {_article(_CHECKPOINT_KINDS.get(task, task))} call (task={task!r}) but {self.source} is a "
                f"task={self.task!r} checkpoint ({_CHECKPOINT_KINDS.get(self.task, self.task)})"
            )

    # -- 2D --------------------------------------------------------------------------------------------
    def _run_2d(self, x: torch.Tensor, mode, crop, stride, flip) -> torch.Tensor:
        """(1, 3, H, W) -> (1, K, H, W) raw outputs (probabilities for seg), at the input size."""
        h, w = x.shape[-2:]
        if self.resize and min(h, w) != self.resize:
            s = self.resize / min(h, w)
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        y = predict(self.model, x, mode=mode, crop=crop, stride=stride, flip=flip, probabilities=self.task == "seg")
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return y

    @torch.no_grad()
    def _run_flow(self, a: torch.Tensor, b: torch.Tensor, flip: bool) -> torch.Tensor:
        flow = self.model(a, b)  # (1, 2, H, W)
        if flip:
            back = self.model(a.flip(-1), b.flip(-1)).flip(-1)
            back[:, 0] = -back[:, 0]  # mirrored x: the u component changes sign
            flow = (flow + back) / 2
        return flow

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
        roi: tuple[int, int, int] | None = None,
        overlap: float = 0.5,
        normalize: bool = True,
    ):
        """Predictions as numpy at the input size (see the class docstring). Volumes: ``roi``/``overlap`` set
        the sliding window (default: the training patch, Gaussian blending); ``normalize`` z-scores each
        modality over the brain (nonzero voxels) as the training data was — raw scanner intensities in."""
        self._check_task(task)
        # an option this task does not use is refused, not silently ignored (the caller would believe the
        # prediction had e.g. flip TTA or a sliding window)
        unused = {
            "volume": {"flip": flip, "mode": mode != "whole", "crop": crop, "stride": stride},
            "flow": {"mode": mode != "whole", "crop": crop, "stride": stride, "roi": roi, "probabilities": probabilities},
        }.get(self.task, {"roi": roi})
        given = [k for k, v in unused.items() if v not in (None, False)]
        if given:
            raise ValueError(f"{', '.join(given)}: not an option for a task={self.task!r} checkpoint "
                             f"({self.source}); see Predictor.predict's docstring for what each task takes")
        if self.task == "volume":
            return self._predict_volume(inputs, roi, overlap, probabilities, normalize)
        if self.task == "flow":
            if image2 is None:
                raise ValueError(f"{self.source} is an optical-flow checkpoint: call predict(image1, image2)")
            return self._predict_flow(inputs, image2, flip)
        if image2 is not None:
            raise ValueError(f"image2 is only for flow; {self.source} is a task={self.task!r} checkpoint")
        items, batched = _as_list(inputs)
        outs = []
        for item in items:
            x = torch.from_numpy(_load_image(item, self.intensity)).permute(2, 0, 1)[None].to(self.device)  # (1, 3, H, W)
            y = self._run_2d(x, mode, crop, stride, flip)[0].float().cpu()
            if self.task == "seg":
                labels = y.argmax(0).numpy()
                outs.append((labels, y.numpy()) if probabilities else labels)
            else:
                outs.append(y[0].numpy())  # depth (H, W) metres
        return self._collect(outs, inputs, batched)

    @staticmethod
    def _collect(outs: list, inputs, batched: bool):
        if not batched:
            return outs[0]
        if isinstance(inputs, (list, tuple)):
            return outs
        if isinstance(outs[0], tuple):
            return tuple(np.stack(parts) for parts in zip(*outs))
        return np.stack(outs)

    def _predict_flow(self, image1, image2, flip: bool):
        items1, batched = _as_list(image1)
        items2, batched2 = _as_list(image2)
        if len(items1) != len(items2) or batched != batched2:
            raise ValueError(f"got {len(items1)} first frames but {len(items2)} second frames; pass pairs")
        outs = []
        for a, b in zip(items1, items2):
            a, b = _load_image(a, self.intensity), _load_image(b, self.intensity)
            if a.shape != b.shape:
                raise ValueError(f"the two frames differ in size: {a.shape[:2]} vs {b.shape[:2]} (H, W); they must match")
            ta = torch.from_numpy(a).permute(2, 0, 1)[None].to(self.device)  # (1, 3, H, W)
            tb = torch.from_numpy(b).permute(2, 0, 1)[None].to(self.device)
            flow = self._run_flow(ta, tb, flip)[0].float().cpu()  # (2, H, W)
            outs.append(flow.permute(1, 2, 0).numpy())  # (H, W, 2)
        return self._collect(outs, image1, batched)

    @torch.no_grad()
    def _predict_volume(self, volume, roi, overlap: float, probabilities: bool, normalize: bool = True):
        from ._monai import sliding_window_inference  # MONAI, imported without its INFO noise

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
            from .data.volumes import zscore

            # as in training: per-modality z-score over the brain (voxels nonzero in any modality)
            arr = zscore(arr, (arr != 0).any(axis=0))
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None].to(self.device)  # (1, C, D, H, W)
        roi = tuple(roi or (self.config.get("data") or {}).get("patch") or arr.shape[1:])
        roi = tuple(min(int(r), s) for r, s in zip(roi, arr.shape[1:]))
        logits = sliding_window_inference(x, roi, 1, self.model, overlap=overlap, mode="gaussian")  # (1, K, D, H, W)
        probs = logits.float().softmax(1)[0].cpu()
        labels = probs.argmax(0).numpy()
        return (labels, probs.numpy()) if probabilities else labels

    # -- pictures --------------------------------------------------------------------------------------
    def visualize(self, inputs, image2=None, prediction=None, alpha: float = 0.5, **kw) -> np.ndarray:
        """A picture of the prediction (uint8 HWC): seg class colours over the image | depth image | colour
        map | flow image1 | colour wheel | volume middle axial slice with label colours."""
        from . import viz

        if self.task == "volume":
            pred = self.predict(inputs, **kw) if prediction is None else prediction
            arr = np.asarray(inputs)
            z = arr.shape[1] // 2
            sl = arr[0, z]
            span = float(sl.max() - sl.min()) or 1.0
            grey = np.repeat(((sl - sl.min()) / span)[..., None], 3, axis=-1)  # (H, W, 3) in [0, 1]
            return viz.overlay(grey, pred[z], self.num_classes, alpha)
        if self.task == "flow":
            pred = self.predict(inputs, image2, **kw) if prediction is None else prediction
            return np.concatenate([viz.to_uint8(_load_image(inputs, self.intensity)), viz.flow_to_color(pred)], axis=1)
        image = _load_image(inputs, self.intensity)
        pred = self.predict(inputs, **kw) if prediction is None else prediction
        if self.task == "seg":
            return viz.overlay(image, pred, self.num_classes, alpha)
        return np.concatenate([viz.to_uint8(image), viz.colorize_depth(pred)], axis=1)
