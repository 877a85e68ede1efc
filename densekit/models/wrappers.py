"""Inference wrappers: plain ``nn.Module``s around a trained model, shared by validation, evaluation and the
Predictor, so that test-time augmentation and sliding windows are written once.

- ``FlipTTA``: a dense 2D/3D model averaged over input scales and axis flips (probabilities for logits).
- ``FlowTTA``: a two-frame flow model averaged over input scales (vectors rescaled) and the mirrored pair;
  ``scales="auto"`` runs each pair at the training frame size (``auto_flow_size``).
- ``SlidingWindow``: a dense model run over overlapping windows: 2D by mean over crops every ``stride``
  pixels (mmseg's "slide" mode), 3D by MONAI's ``sliding_window_inference`` (``overlap``, Gaussian blending).

Each wrapper with nothing to do (one scale of 1.0, no flip; an input that fits one window) returns the
wrapped model's own output unchanged, so wrapping never changes a plain prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FlipTTA", "FlowTTA", "SlidingWindow", "auto_flow_size"]


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, C, *S) -> (B, C, *size), bilinear (2D) or trilinear (3D)."""
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class FlipTTA(nn.Module):
    """``model(x)`` averaged over ``scales`` (the input resized by each factor, the output resized back) and
    over the identity plus each entry of ``flips`` (a tuple of axes flipped together: ``((-1,),)`` is the
    horizontal flip of an image, ``((-3,), (-2,), (-1,))`` the three axis flips of a volume).

    ``probabilities=True`` (logits out, e.g. segmentation): the views' softmax probabilities are averaged and
    their log returned, so the output is still logits (its softmax is the mean probability, its argmax the
    TTA prediction); otherwise (depth, any regression) the raw outputs are averaged. The output has the
    input's spatial size.
    """

    def __init__(
        self,
        model: nn.Module,
        flips: Sequence[Sequence[int]] = (),
        scales: Sequence[float] = (1.0,),
        probabilities: bool = False,
    ):
        super().__init__()
        if not scales or any(float(s) <= 0 for s in scales):
            raise ValueError(f"scales must be a non-empty list of factors > 0, got {list(scales)}")
        self.model = model
        self.flips = tuple(tuple(int(a) for a in axes) for axes in flips)
        self.scales = tuple(float(s) for s in scales)
        self.probabilities = bool(probabilities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [()] + [axes for axes in self.flips]
        if len(views) == 1 and self.scales == (1.0,):
            return self.model(x)
        size = x.shape[2:]
        total = None
        for scale in self.scales:
            xs = x if scale == 1.0 else _resize(x, [max(1, round(s * scale)) for s in size])
            for axes in views:
                y = self.model(xs.flip(axes) if axes else xs)
                y = y.flip(axes) if axes else y
                if y.shape[2:] != size:
                    y = _resize(y, size)
                y = y.float().softmax(1) if self.probabilities else y
                total = y if total is None else total + y
        mean = total / (len(self.scales) * len(views))
        # log of the mean probability: logits whose softmax is that mean (tiny floor: no -inf for a 0)
        return mean.clamp_min(torch.finfo(mean.dtype).tiny).log() if self.probabilities else mean


def auto_flow_size(size: Sequence[int], train_size: Sequence[int]) -> tuple[int, int]:
    """The (h, w) a pair of ``size`` (H, W) is run at by ``FlowTTA(scales="auto")``: one factor for both axes
    (no stretch), the largest that fits the frame inside ``train_size`` (the frames the model trained on),
    never above 1 (a frame already that small runs natively), at least 8 px a side.

    Why: a flow network only reaches the motions it saw in training -- the embedded scenes move objects by
    a fraction of the frame width, so a 741-px-wide photo holds motions ~6x longer (in pixels) than a 128-px
    training frame. Run at the training frame size, the same scene's motions are back in the trained range;
    the flow is then upsampled and its vectors scaled back (coarse-to-fine by image size)."""
    h, w = int(size[0]), int(size[1])
    s = min(1.0, float(train_size[0]) / h, float(train_size[1]) / w)
    return max(8, round(h * s)), max(8, round(w * s))


class FlowTTA(nn.Module):
    """``model(image1, image2)`` flow at the input size, averaged over input ``scales`` (both frames resized
    to ``round(s * size)``, at least 8 px, by area; the flow resized back and its vectors scaled by the size
    ratio, so a model trained on small frames sees motions in its trained range) and, with ``flip``, over
    the mirrored pair (both frames flipped left-right, the flow flipped back and u negated).

    ``scales="auto"`` (with ``train_size``, the training frames' (H, W)): one scale per input size, chosen by
    ``auto_flow_size`` from the image size alone (no ground truth); ``last_size`` records the size the last
    pair was run at (what evaluate.py prints)."""

    def __init__(
        self,
        model: nn.Module,
        scales: Sequence[float] | str = (1.0,),
        flip: bool = False,
        train_size: Sequence[int] | None = None,
    ):
        super().__init__()
        self.auto = isinstance(scales, str)
        if self.auto:
            if scales != "auto":
                raise ValueError(f"scales must be a list of factors > 0 or 'auto', got {scales!r}")
            if train_size is None or len(train_size) != 2 or any(int(t) < 8 for t in train_size):
                raise ValueError(f"scales='auto' needs train_size=(H, W) of at least 8 px, got {train_size}")
            self.train_size = (int(train_size[0]), int(train_size[1]))
            self.scales = ()
        else:
            if not scales or any(float(s) <= 0 for s in scales):
                raise ValueError(f"scales must be a non-empty list of factors > 0, got {list(scales)}")
            self.train_size = None
            self.scales = tuple(float(s) for s in scales)
        self.model = model
        self.flip = bool(flip)
        self.last_size: tuple[int, int] | None = None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h, w = a.shape[-2:]
        if self.auto:
            sizes = [auto_flow_size((h, w), self.train_size)]
        else:
            sizes = [(max(8, round(h * s)), max(8, round(w * s))) for s in self.scales]
        self.last_size = sizes[-1]
        if not self.flip and sizes == [(h, w)]:
            return self.model(a, b)
        total = None
        for size in sizes:
            ra = a if size == (h, w) else F.interpolate(a, size=size, mode="area")
            rb = b if size == (h, w) else F.interpolate(b, size=size, mode="area")
            flow = self.model(ra, rb)  # (B, 2, h', w') in pixels of the resized frames
            if self.flip:
                back = self.model(ra.flip(-1), rb.flip(-1)).flip(-1)
                back = torch.cat([-back[:, :1], back[:, 1:]], dim=1)  # mirrored x: u changes sign
                flow = (flow + back) / 2
            if size != (h, w):
                flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
                flow = flow * torch.tensor([w / size[1], h / size[0]], device=flow.device, dtype=flow.dtype).view(
                    1, 2, 1, 1
                )
            total = flow if total is None else total + flow
        return total / len(sizes)


class SlidingWindow(nn.Module):
    """``model`` run over overlapping windows of ``roi_size`` ((H, W) or (D, H, W)), the outputs blended at
    the input size; an input that fits in one window is run whole.

    2D: windows start every ``stride`` pixels (default two thirds of the window) and the last one is flush
    with the border; overlapping outputs are averaged (mmseg's "slide" mode). 3D: MONAI's
    ``sliding_window_inference`` with ``overlap`` and ``mode`` ("gaussian" or "constant") blending,
    ``sw_batch_size`` windows per call (default: the input's batch size).
    """

    def __init__(
        self,
        model: nn.Module,
        roi_size: Sequence[int],
        overlap: float = 0.5,
        mode: str = "gaussian",
        stride: Sequence[int] | None = None,
        sw_batch_size: int | None = None,
    ):
        super().__init__()
        if len(roi_size) not in (2, 3) or any(int(r) < 1 for r in roi_size):
            raise ValueError(f"roi_size must be 2 or 3 positive sizes, got {list(roi_size)}")
        self.model = model
        self.roi_size = tuple(int(r) for r in roi_size)
        self.overlap, self.mode, self.sw_batch_size = float(overlap), str(mode), sw_batch_size
        if stride is None:
            stride = [max(1, r * 2 // 3) for r in self.roi_size]
        if len(stride) != len(self.roi_size) or any(int(s) < 1 for s in stride):
            raise ValueError(f"stride must be {len(self.roi_size)} positive sizes, got {list(stride)}")
        self.stride = tuple(int(s) for s in stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(x.shape[2:])
        if len(spatial) != len(self.roi_size):
            raise ValueError(
                f"a {len(self.roi_size)}D window {list(self.roi_size)} for an input of shape {tuple(x.shape)}"
            )
        if all(s <= r for s, r in zip(spatial, self.roi_size)):
            return self.model(x)
        if len(spatial) == 3:
            from .._monai import sliding_window_inference  # MONAI, imported without its INFO noise

            return sliding_window_inference(
                x, self.roi_size, self.sw_batch_size or x.shape[0], self.model, overlap=self.overlap, mode=self.mode
            )
        return self._slide_2d(x)

    def _slide_2d(self, image: torch.Tensor) -> torch.Tensor:
        b, _, h, w = image.shape
        ch, cw = min(self.roi_size[0], h), min(self.roi_size[1], w)
        sh, sw = self.stride
        rows = max(math.ceil((h - ch) / sh), 0) + 1
        cols = max(math.ceil((w - cw) / sw), 0) + 1
        out, count = None, image.new_zeros(1, 1, h, w)
        for r in range(rows):
            for c in range(cols):
                y0, x0 = min(r * sh, h - ch), min(c * sw, w - cw)
                pred = self.model(image[..., y0 : y0 + ch, x0 : x0 + cw])  # (B, K, ch, cw)
                if out is None:
                    out = pred.new_zeros(b, pred.shape[1], h, w)
                out[..., y0 : y0 + ch, x0 : x0 + cw] += pred
                count[..., y0 : y0 + ch, x0 : x0 + cw] += 1
        return out / count
