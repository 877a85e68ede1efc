"""Builders shared by several test modules: repository paths, tiny training runs, and dataset trees in the
real on-disk layouts (Cityscapes, ADE20K, folders, NYU/KITTI depth, FlyingChairs/Things/Sintel/KITTI flow,
BraTS). Imported as ``from helpers import ...`` (pyproject's pytest ``pythonpath = ["tests"]``); fixtures live
in conftest.py. Each family draws its frames at its own small size (``SEG_H``/``DEPTH_H``/``FLOW_H``...)."""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# -- tiny training runs ----------------------------------------------------------------------------

VOLUME_SMOKE = [
    "task=volume",
    "data.train_length=4",
    "data.val_length=2",
    "data.size=[24,24,24]",
    "data.patch=[16,16,16]",
    "data.batch_size=2",
    "trainer.val_check_interval=null",
    "trainer.enable_progress_bar=false",
    "backbone.widths=[8,16,32,64,64]",
    "trainer.num_sanity_val_steps=0",
]

FLOW_SMOKE = [
    "task=flow",
    "data.size=[64,64]",
    "data.augment.crop=[64,64]",
    "data.train_length=16",
    "data.val_length=8",
    "data.batch_size=4",
    "trainer.val_check_interval=null",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
]


def quiet_trainer(tmp_path, **kw):
    """A bare CPU Lightning Trainer for tests that drive ``fit`` directly: no logger, checkpoints, progress bar,
    model summary, sanity check or validation (each overridable through ``kw``)."""
    import pytorch_lightning as pl

    settings = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        "default_root_dir": str(tmp_path),
    }
    return pl.Trainer(**{**settings, **kw})


def train_run(tmp_path_factory, name: str, overrides: list[str]):
    """Train once with ``overrides`` into a fresh directory: (run_dir, final metrics, printed output)."""
    from hydra import compose, initialize_config_dir

    from densekit.train import train

    run_dir = tmp_path_factory.mktemp(name)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"output_dir={run_dir}"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        metrics = train(cfg)
    return run_dir, metrics, out.getvalue()


def save_rgb(path, rgb):
    """An 8-bit RGB image; JPEGs near-lossless (quality 100, no chroma subsampling)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 100, "subsampling": 0} if path.suffix == ".jpg" else {}
    Image.fromarray(np.asarray(rgb, np.uint8)).save(path, **options)


# -- segmentation ----------------------------------------------------------------------------------

SEG_H, SEG_W = 16, 32


def save_labels(path, labels, mode="L"):
    """A single-channel label PNG; mode 'P' carries the VOC palette like the official SegmentationClass."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, np.uint8)
    img = Image.frombytes(mode, (labels.shape[1], labels.shape[0]), labels.tobytes())
    if mode == "P":
        from densekit.data.readers.seg_labels import voc_palette

        img.putpalette(voc_palette())
    img.save(path)


def gradient_rgb(h=SEG_H, w=SEG_W):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 7 % 256, ys * 13 % 256, (xs + ys) * 3 % 256], -1).astype(np.uint8)


def cityscapes_labels():
    ids = np.zeros((SEG_H, SEG_W), np.uint8)
    ids[:, 0:8], ids[:, 8:16], ids[:, 16:24], ids[:, 24:32] = 7, 26, 0, 33  # road, car, unlabeled, bicycle
    ids[0, :] = 9  # parking: a real labelId whose trainId is 255
    ids[5, 5] = 23  # sky
    return ids


def make_cityscapes(root, labels=None, image_size=(SEG_H, SEG_W)):
    for split, city, frame_id in (
        ("train", "aachen", "000000_000019"),
        ("train", "bochum", "000001_000019"),
        ("val", "frankfurt", "000000_000294"),
    ):
        stem = f"{city}_{frame_id}"
        save_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", gradient_rgb(*image_size))
        gt = root / "gtFine" / split / city
        save_labels(gt / f"{stem}_gtFine_labelIds.png", cityscapes_labels() if labels is None else labels)
        # the siblings of the official release, which the reader must not pick up
        save_rgb(gt / f"{stem}_gtFine_color.png", np.full((SEG_H, SEG_W, 3), 128))
        save_labels(gt / f"{stem}_gtFine_instanceIds.png", np.full((SEG_H, SEG_W), 26))
        (gt / f"{stem}_gtFine_polygons.json").write_text("{}")
    return root


def make_ade(root, values=(0, 1, 150, 13)):
    base = root / "ADEChallengeData2016"
    ann = np.zeros((SEG_H, SEG_W), np.uint8)
    for k, v in enumerate(values):
        ann[:, 8 * k : 8 * (k + 1)] = v
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        grey = Image.fromarray(np.full((SEG_H, SEG_W), 90, np.uint8))  # ADE holds a few greyscale JPEGs
        (base / "images" / split).mkdir(parents=True)
        grey.save(base / "images" / split / f"{stem}.jpg", quality=95)
        save_labels(base / "annotations" / split / f"{stem}.png", ann)
    return root


def folder_labels(h=SEG_H, w=SEG_W):
    ys, xs = np.mgrid[0:h, 0:w]
    return ((ys // 4 + xs // 4) % 3).astype(np.uint8)  # a 3-class checkerboard of 4-px cells


def make_folder(root, stems=("a", "b", "c"), h=SEG_H, w=SEG_W, classes=("bg", "road", "car"), split="train"):
    for k, stem in enumerate(stems):
        img = gradient_rgb(h, w)
        img[..., 2] = k * 40  # each sample distinguishable
        save_rgb(root / "images" / split / f"{stem}.png", img)
        save_labels(root / "masks" / split / f"{stem}.png", folder_labels(h, w))
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


# -- depth -----------------------------------------------------------------------------------------

DEPTH_H, DEPTH_W = 6, 8
KITTI_DRIVE = "2011_09_26_drive_0002_sync"


def rgb_pattern(h=DEPTH_H, w=DEPTH_W, k=0):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 20 % 256, ys * 30 % 256, np.full_like(xs, 40 * k)], -1).astype(np.uint8)


def depth_pattern(h=DEPTH_H, w=DEPTH_W, k=0, base=1.0):
    """Metres on a 1/256 grid (exact at KITTI's scale and, being multiples of 1/8 + 1 mm, at 1000 too)."""
    ys, xs = np.mgrid[0:h, 0:w]
    return (base + 0.125 * xs + 0.5 * ys + k).astype(np.float32)


def save_png16(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint16)).save(path)


def make_nyu_folder(root, depth_scale=1000, size_of=None):
    """The BTS/AdaBins extraction: sync/ (train) and official_splits/test/ with list files in root."""
    lines = {"train": [], "val": []}
    for split, base, scene, frames in (
        ("train", "sync", "kitchen_0028a", (45, 46)),
        ("val", "official_splits/test", "bathroom", (1,)),
    ):
        for k, number in enumerate(frames):
            rgb_rel, depth_rel = f"{scene}/rgb_{number:05d}.jpg", f"{scene}/sync_depth_{number:05d}.png"
            save_rgb(root / base / rgb_rel, rgb_pattern(k=k))
            d = depth_pattern(k=k) if size_of is None else depth_pattern(*size_of)
            save_png16(root / base / depth_rel, np.rint(d * depth_scale))
            lead = "/" if split == "train" else ""  # the train list's paths start with '/'
            lines[split].append(f"{lead}{rgb_rel} {lead}{depth_rel} 518.8579")
    (root / "nyudepthv2_train_files_with_gt.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "nyudepthv2_test_files_with_gt.txt").write_text("\n".join(lines["val"]) + "\n")
    return root


def kitti_gt(h, w, k=0):
    gt = np.zeros((h, w), np.float32)
    gt[h // 2 :, ::3] = depth_pattern(h, w, k, base=5.0)[h // 2 :, ::3]  # sparse: LiDAR rows, lower half
    return gt


def make_kitti_depth(root, h=DEPTH_H, w=DEPTH_W, frames=(5, 6), test_frames=(7, 8), gt_values=None):
    """Raw frames under root/<date>/<drive>/image_02/data, annotated depth under
    root/data_depth_annotated/{train,val}/<drive>/proj_depth/groundtruth/image_02 (value / 256 = metres)."""
    lines = {"train": [], "val": []}
    for split, sub, numbers in (("train", "train", frames), ("val", "val", test_frames)):
        for k, n in enumerate(numbers):
            rgb_rel = f"2011_09_26/{KITTI_DRIVE}/image_02/data/{n:010d}.png"
            gt_rel = f"{KITTI_DRIVE}/proj_depth/groundtruth/image_02/{n:010d}.png"
            save_rgb(root / rgb_rel, rgb_pattern(h, w, k))
            gt = kitti_gt(h, w, k) if gt_values is None else gt_values
            save_png16(root / "data_depth_annotated" / sub / gt_rel, np.rint(gt * 256))
            lines[split].append(f"{rgb_rel} {gt_rel} 721.5377")
    lines["val"].insert(1, f"2011_09_26/{KITTI_DRIVE}/image_02/data/0000000099.png None 721.5377")
    (root / "eigen_train_files_with_gt.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "eigen_test_files_with_gt.txt").write_text("\n".join(lines["val"]) + "\n")
    return root


def make_depth_folder(root, split="train"):
    save_rgb(root / "images" / split / "a.png", rgb_pattern(k=0))
    save_png16(root / "depth" / split / "a.png", np.rint(depth_pattern(k=0) * 1000))
    save_rgb(root / "images" / split / "b.jpg", rgb_pattern(k=1))
    np.save(root / "depth" / split / "b.npy", depth_pattern(k=1))
    return root


# -- optical flow ----------------------------------------------------------------------------------

FLOW_H, FLOW_W = 12, 16


def frame(value, h=FLOW_H, w=FLOW_W):
    """A frame whose red channel identifies it (value) and whose green channel is a column ramp."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = value
    img[..., 1] = np.arange(w) * 10
    return img


def known_flow(k, h=FLOW_H, w=FLOW_W):
    """u = k + x / 4, v = -k + y / 8 (pixels): distinct per sample and per pixel."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([k + xs / 4, -k + ys / 8], -1).astype(np.float32)


def write_flo(path, flow):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = flow.shape[:2]
    path.write_bytes(struct.pack("<fii", 202021.25, w, h) + flow.astype("<f4").tobytes())


def write_pfm3(path, flow):
    """A FlyingThings-style PFM: 'PF', 3 channels (u, v, 0), little-endian (scale -1), bottom row first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = flow.shape[:2]
    data = np.concatenate([flow, np.zeros((h, w, 1), np.float32)], -1)[::-1]
    path.write_bytes(f"PF\n{w} {h}\n-1.0\n".encode() + data.astype("<f4").tobytes())


def write_kitti(path, flow, valid):
    """KITTI flow PNG: 16-bit, R, G, B = u * 64 + 2^15, v * 64 + 2^15, valid (OpenCV writes B, G, R)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    enc = np.zeros(flow.shape[:2] + (3,), np.uint16)
    enc[..., 0] = np.round(flow[..., 0] * 64 + 2**15)
    enc[..., 1] = np.round(flow[..., 1] * 64 + 2**15)
    enc[..., 2] = valid
    cv2.imwrite(str(path), enc[..., ::-1])


def save_mask(path, mask):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def make_chairs(root, marks=(1, 2, 1)):
    for k, _ in enumerate(marks, 1):
        save_rgb(root / "data" / f"{k:05d}_img1.ppm", frame(10 * k))
        save_rgb(root / "data" / f"{k:05d}_img2.ppm", frame(10 * k + 1))
        write_flo(root / "data" / f"{k:05d}_flow.flo", known_flow(k))
    (root / "FlyingChairs_train_val.txt").write_text("\n".join(str(m) for m in marks) + "\n")
    return root


def make_things(root, part="TRAIN"):
    for cam, c in (("left", "L"), ("right", "R")):
        seq = Path(part) / "A" / "0000"
        for n in (6, 7, 8):
            base = 100 if cam == "left" else 150
            for pas in ("cleanpass", "finalpass"):
                value = base + n + (0 if pas == "cleanpass" else 30)
                save_rgb(root / f"frames_{pas}" / seq / cam / f"{n:04d}.png", frame(value))
            flow_dir = root / "optical_flow" / seq
            future = f"OpticalFlowIntoFuture_{n:04d}_{c}.pfm"
            write_pfm3(flow_dir / "into_future" / cam / future, known_flow(n))
            write_pfm3(flow_dir / "into_past" / cam / f"OpticalFlowIntoPast_{n:04d}_{c}.pfm", -known_flow(n))
    return root


def make_sintel(root):
    for s, scene in enumerate(("alley_1", "market_2")):
        for n in (1, 2, 3):
            for pas, offset in (("clean", 0), ("final", 100)):
                save_rgb(root / "training" / pas / scene / f"frame_{n:04d}.png", frame(10 * s + n + offset))
        for n in (1, 2):
            write_flo(root / "training" / "flow" / scene / f"frame_{n:04d}.flo", known_flow(n + 10 * s))
            invalid = np.zeros((FLOW_H, FLOW_W), bool)
            invalid[0, :4] = True
            occluded = np.zeros((FLOW_H, FLOW_W), bool)
            occluded[5:7, 8:12] = True
            save_mask(root / "training" / "invalid" / scene / f"frame_{n:04d}.png", invalid)
            save_mask(root / "training" / "occlusions" / scene / f"frame_{n:04d}.png", occluded)
    return root


def kitti_valid():
    occ = np.zeros((FLOW_H, FLOW_W), bool)
    occ[2:10, 1:15] = True
    noc = occ.copy()
    noc[2:4, :] = False
    return occ, noc


def make_kitti_flow(root, ids=(0, 1, 2)):
    occ, noc = kitti_valid()
    for i in ids:
        save_rgb(root / "training" / "image_2" / f"{i:06d}_10.png", frame(i))
        save_rgb(root / "training" / "image_2" / f"{i:06d}_11.png", frame(i + 100))
        write_kitti(root / "training" / "flow_occ" / f"{i:06d}_10.png", known_flow(i), occ)
        write_kitti(root / "training" / "flow_noc" / f"{i:06d}_10.png", known_flow(i), noc)
    return root


# -- 3D volumes ------------------------------------------------------------------------------------

VOLUME_SHAPE = (12, 10, 8)  # file order (i, j, k) -> samples are (D, H, W) = (8, 10, 12)
VOLUME_AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])


def brain_box(shape=VOLUME_SHAPE):
    brain = np.zeros(shape, bool)
    brain[2:10, 2:8, 1:7] = True
    return brain


def modality(c, shape=VOLUME_SHAPE):
    """A distinct, non-constant intensity per channel inside the brain box; exactly 0 outside."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    vol = (100.0 * (c + 1) + 3.0 * i + 5.0 * j * (c + 1) + 7.0 * k).astype(np.float32)
    return np.where(brain_box(shape), vol, 0.0).astype(np.float32)


def lesion(values=(1, 2, 4), shape=VOLUME_SHAPE):
    seg = np.zeros(shape, np.uint8)
    seg[4:8, 3:7, 2:6] = values[1]  # edema
    seg[5:7, 4:6, 3:5] = values[2]  # enhancing
    seg[5, 4, 3] = values[0]  # necrotic core (one voxel)
    return seg


def save_nifti(path, array, affine=VOLUME_AFFINE):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def make_brats(root, cases=("BraTS2021_00000", "BraTS2021_00001"), naming="brats2021", seg=None):
    if naming == "brats2021":
        mods, sep = ("t1", "t1ce", "t2", "flair"), "_"
    else:
        mods, sep = ("t1n", "t1c", "t2w", "t2f"), "-"
    values = (1, 2, 4) if naming == "brats2021" else (1, 2, 3)
    for case in cases:
        for c, m in enumerate(mods):
            save_nifti(root / case / f"{case}{sep}{m}.nii.gz", modality(c))
        save_nifti(root / case / f"{case}{sep}seg.nii.gz", lesion(values) if seg is None else seg)
    return root


# first-contact folder builders (test_seg_first_contact.py, test_seg_images.py): a tiny image size
FC_H, FC_W = 20, 24


def box_mask(value=255, h=FC_H, w=FC_W, k=0):
    """0 background with a value-filled box (moved by k so samples differ)."""
    m = np.zeros((h, w), np.uint8)
    m[4 + k : 12 + k, 6:18] = value
    return m


def rgb_image(h=FC_H, w=FC_W, k=0):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 9 % 256, ys * 11 % 256, np.full_like(xs, 40 * k)], -1).astype(np.uint8)


def write_folder(root, masks, images=None, classes="background\nobject\n", split="train", suffix=".png"):
    """masks: {stem: PIL image or uint8 array}; images: {stem: PIL image or array} (default: RGB
    gradients)."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    for k, (stem, mask) in enumerate(masks.items()):
        mask = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
        mask.save(root / "masks" / split / f"{stem}.png")
        if images is not None and stem in images and images[stem] is None:
            continue  # the test wrote this image itself
        image = (images or {}).get(stem)
        if image is None:
            image = rgb_image(mask.height, mask.width, k)
        image = image if isinstance(image, Image.Image) else Image.fromarray(image)
        ext = suffix if not isinstance(suffix, dict) else suffix[stem]
        image.save(root / "images" / split / f"{stem}{ext}")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def binary_dataset(root, n_train=4, n_val=2, h=FC_H, w=FC_W):
    """0/255 masks (what most annotation tools export), JPEG images, a 2-class list."""
    for split, n in (("train", n_train), ("val", n_val)):
        write_folder(root, {f"s{i}": box_mask(255, h, w, i % 4) for i in range(n)}, split=split, suffix=".jpg")
    return root


def grey16(values, h=FC_H, w=FC_W):
    """A 16-bit grey PNG (Pillow mode I;16) holding ``values`` tiled over the image."""
    arr = np.resize(np.asarray(values, np.uint16), (h, w))
    return Image.fromarray(arr), arr
