"""3D volume data: NIfTI IO, BraTS case folders (2021 and 2023 naming), the nnU-Net-style NIfTI folder, the
embedded procedural volumes, patch sampling, augmentation and every bad-input error, on tiny fixture
volumes written with nibabel by the tests."""

import json
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch

from densekit.data import (
    DATASETS,
    BadSampleWarning,
    BraTSVolumes,
    NiftiFolder,
    SyntheticVolumes,
    build_dataset,
)
from densekit.data.readers.volume import dhw_to_nifti, nifti_to_dhw
from densekit.data.transforms.volume import VolumeAugment, centre_patch, random_patch, zscore
from densekit.io import read_nifti, write_nifti
from densekit.schema import check_volume_sample
from helpers import VOLUME_AFFINE, VOLUME_SHAPE, brain_box, lesion, make_brats, modality
from helpers import save_nifti as save

SHAPE, AFFINE = VOLUME_SHAPE, VOLUME_AFFINE  # what the builders in helpers.py write
DHW = SHAPE[::-1]


def brats(root, split="train", **kw):
    kw.setdefault("val_fraction", 0.0)
    return BraTSVolumes(split, root, **kw)


# -- io ------------------------------------------------------------------------------------------------
def test_nifti_roundtrip_keeps_labels_integer_and_intensities_float(tmp_path):
    labels = lesion()
    write_nifti(tmp_path / "seg.nii.gz", labels.astype(np.int64), AFFINE)
    write_nifti(tmp_path / "img.nii", modality(0))
    arr, aff = read_nifti(tmp_path / "seg.nii.gz")
    assert np.issubdtype(arr.dtype, np.integer) and np.array_equal(arr, labels)
    assert np.array_equal(aff, AFFINE)
    arr, aff = read_nifti(tmp_path / "img.nii")
    assert arr.dtype == np.float32 and np.array_equal(arr, modality(0)) and np.array_equal(aff, np.eye(4))
    # scaled integers (how most scanners store intensities) come back as float32 with the scaling applied
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    arr, _ = read_nifti(tmp_path / "scaled.nii.gz")
    assert arr.dtype == np.float32 and arr[1, 2, 3] == pytest.approx(23 * 0.5 + 10.0)


def test_nifti_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.nii.gz"
    write_nifti(corrupt, modality(0))
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated gzip stream
    with pytest.raises(ValueError, match="corrupt.nii.gz: unreadable NIfTI"):
        read_nifti(corrupt)
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(ValueError, match="junk.nii: unreadable NIfTI"):
        read_nifti(tmp_path / "junk.nii")
    with pytest.raises(FileNotFoundError, match="absent.nii.gz"):
        read_nifti(tmp_path / "absent.nii.gz")
    with pytest.raises(ValueError, match="expected a NIfTI file"):
        write_nifti(tmp_path / "x.npy", modality(0))


def test_axis_order_helpers_are_inverse():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert nifti_to_dhw(x).shape == (2, 5, 4, 3)
    assert nifti_to_dhw(x)[1, 4, 2, 0] == x[1, 0, 2, 4]
    assert np.array_equal(dhw_to_nifti(nifti_to_dhw(x)), x)


# -- BraTS ------------------------------------------------------------------------------------------------
def test_brats2021_case_is_transposed_zscored_over_brain_and_label_4_becomes_3(tmp_path):
    ds = brats(make_brats(tmp_path), naming="brats2021")
    assert len(ds) == 2 and ds.num_classes == 4
    s = ds[0]
    check_volume_sample(s)
    assert s["image"].shape == (4, *DHW) and s["mask"].shape == DHW and bool(s["valid"].all())
    brain = torch.from_numpy(nifti_to_dhw(brain_box()))
    for c in range(4):
        inside = s["image"][c][brain].double()
        assert inside.mean().item() == pytest.approx(0.0, abs=1e-5)
        assert inside.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
        assert (s["image"][c][~brain] == 0).all()
    # one voxel by hand: channel 2 at file index (i, j, k) = (3, 4, 5) is sample [2, 5, 4, 3]
    raw = modality(2)
    vals = raw[brain_box()].astype(np.float64)
    expect = (raw[3, 4, 5] - vals.mean()) / vals.std()
    assert s["image"][2, 5, 4, 3].item() == pytest.approx(expect, rel=1e-5)
    expected_mask = nifti_to_dhw(np.choose(lesion(), [0, 1, 2, 0, 3]).astype(np.int64))  # 4 -> 3
    assert torch.equal(s["mask"], torch.from_numpy(expected_mask))
    assert sorted(torch.unique(s["mask"]).tolist()) == [0, 1, 2, 3]
    assert int((s["mask"] == 3).sum()) == 2 * 2 * 2 - 1  # the enhancing cube minus the necrotic voxel


def test_brats2023_naming_keeps_labels_and_modality_order(tmp_path):
    cases = ("BraTS-GLI-00000-000", "BraTS-GLI-00002-000")
    ds = brats(make_brats(tmp_path, cases, naming="brats2023"), naming="brats2023")
    s = ds[1]
    assert torch.equal(s["mask"], torch.from_numpy(nifti_to_dhw(lesion((1, 2, 3)).astype(np.int64))))
    # modalities subset/order from the config: channel 0 is t2f (the 4th file, modality(3))
    ds = brats(tmp_path, naming="brats2023", modalities=["t2f", "t1n"])
    s2 = ds[0]
    assert s2["image"].shape[0] == 2
    assert torch.allclose(
        s2["image"][0],
        torch.from_numpy(zscore(nifti_to_dhw(modality(3))[None], nifti_to_dhw(brain_box()))[0]),
        atol=1e-6,
    )


@pytest.mark.parametrize("naming,bad", [("brats2021", 3), ("brats2023", 4)])
def test_label_outside_convention_names_case_and_values(tmp_path, naming, bad):
    case = "BraTS2021_00007" if naming == "brats2021" else "BraTS-GLI-00007-000"
    seg = lesion()
    seg[0, 0, 0] = bad
    make_brats(tmp_path, (case,), naming=naming, seg=seg)
    ds = brats(tmp_path, naming=naming)
    with pytest.raises(ValueError, match=rf"case {case}: label map .* values \[{bad}\] outside"):
        ds[0]


def test_float_label_map_with_integral_values_is_accepted_fractional_is_not(tmp_path):
    make_brats(tmp_path, ("c1",), seg=lesion().astype(np.float32))
    assert sorted(torch.unique(brats(tmp_path)[0]["mask"]).tolist()) == [0, 1, 2, 3]
    seg = lesion().astype(np.float32)
    seg[0, 0, 0] = 1.5
    save(tmp_path / "c1" / "c1_seg.nii.gz", seg)
    with pytest.raises(ValueError, match=r"case c1: .*non-integer values \[1.5\]"):
        brats(tmp_path)[0]


def test_bad_cases_name_the_case(tmp_path):
    make_brats(tmp_path, ("a_shape", "b_affine", "c_missing", "d_good"))
    save(tmp_path / "a_shape" / "a_shape_t2.nii.gz", modality(2, shape=(12, 10, 9)))
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5  # half a millimetre off: not co-registered
    save(tmp_path / "b_affine" / "b_affine_seg.nii.gz", lesion(), affine=shifted)
    (tmp_path / "c_missing" / "c_missing_flair.nii.gz").unlink()
    ds = brats(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"case a_shape: a_shape_t2.nii.gz has shape \(12, 10, 9\) but "
        r"a_shape_t1.nii.gz has \(12, 10, 8\)",
    ):
        ds[0]
    with pytest.raises(ValueError, match=r"case b_affine: b_affine_seg.nii.gz has a different affine .*0.5"):
        ds[1]
    with pytest.raises(ValueError, match=r"case c_missing: missing modality file .*c_missing_flair.nii.gz"):
        ds[2]
    # a tiny float difference is within the tolerance
    near = AFFINE.copy()
    near[0, 3] = 1e-5
    save(tmp_path / "d_good" / "d_good_t1.nii.gz", modality(0), affine=near)
    assert ds[3]["image"].shape == (4, *DHW)
    # skip_bad: each bad case is replaced by the next good one (d_good), counted and warned about
    ds = brats(tmp_path, skip_bad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = ds[0]
    assert torch.equal(s["image"], ds[3]["image"])
    assert sorted(ds.skipped) == [0, 1, 2]
    assert [issubclass(w.category, BadSampleWarning) for w in caught] == [True, True, True]
    assert "3 of 4 skipped" in str(caught[-1].message)


def test_missing_root_and_bad_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="datasets/README.md"):
        BraTSVolumes("train", tmp_path / "nowhere")
    make_brats(tmp_path)
    with pytest.raises(ValueError, match="naming must be one of"):
        BraTSVolumes("train", tmp_path, naming="brats2019")
    with pytest.raises(ValueError, match=r"patch must be \[D, H, W\]"):
        brats(tmp_path, patch=[8, 8])
    with pytest.raises(ValueError, match="unknown volume augment key"):
        brats(tmp_path, augment={"rotate": 0.5})


def test_fraction_split_is_deterministic_and_disjoint_and_split_file(tmp_path):
    cases = tuple(f"BraTS2021_{i:05d}" for i in range(5))
    make_brats(tmp_path, cases)
    train = BraTSVolumes("train", tmp_path, val_fraction=0.4, seed=3)
    val = BraTSVolumes("val", tmp_path, val_fraction=0.4, seed=3)
    t, v = [c[0] for c in train.cases], [c[0] for c in val.cases]
    assert len(v) == 2 and len(t) == 3 and sorted(t + v) == list(cases)
    assert [c[0] for c in BraTSVolumes("val", tmp_path, val_fraction=0.4, seed=3).cases] == v
    expect_val = sorted(cases[i] for i in np.random.default_rng(3).permutation(5)[:2])
    assert v == expect_val
    # a split file (relative to root), plain and in nnU-Net's splits_final.json list form
    (tmp_path / "split.json").write_text(json.dumps({"train": list(cases[:4]), "val": [cases[4]]}))
    assert [c[0] for c in BraTSVolumes("val", tmp_path, split_file="split.json").cases] == [cases[4]]
    (tmp_path / "splits_final.json").write_text(
        json.dumps([{"train": [cases[0]], "val": [cases[1]]}, {"train": [cases[2]], "val": [cases[3]]}])
    )
    fold1 = BraTSVolumes("train", tmp_path, split_file="splits_final.json", fold=1)
    assert [c[0] for c in fold1.cases] == [cases[2]]
    (tmp_path / "bad.json").write_text(json.dumps({"train": ["nope"], "val": []}))
    with pytest.raises(ValueError, match=r"bad.json: 1 case\(s\) of split 'train' not found.*nope"):
        BraTSVolumes("train", tmp_path, split_file="bad.json")
    with pytest.raises(ValueError, match="'test' split needs a split_file"):
        BraTSVolumes("test", tmp_path)


# -- NIfTI folder ------------------------------------------------------------------------------------------
def make_nifti_folder(root, cases=("case_a", "case_b"), channels=2, dataset_json=True):
    for case in cases:
        for c in range(channels):
            save(root / "images" / f"{case}_{c:04d}.nii.gz", modality(c))
        save(root / "labels" / f"{case}.nii.gz", (lesion((1, 1, 2)) > 0).astype(np.uint8) + (lesion() == 4))
    if dataset_json:
        meta = {"channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "organ": 1, "tumour": 2}}
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nifti_folder_reads_channels_and_classes_from_dataset_json(tmp_path):
    make_nifti_folder(tmp_path)
    ds = NiftiFolder("train", tmp_path, labels=None, val_fraction=0.0)
    assert ds.class_names == ("background", "organ", "tumour") and ds.channels == 2 and len(ds) == 2
    s = ds[0]
    assert s["image"].shape == (2, *DHW)
    expect = nifti_to_dhw((lesion() > 0).astype(np.int64) + (lesion() == 4))
    assert torch.equal(s["mask"], torch.from_numpy(expect))
    # a label value outside 0..K-1
    save(tmp_path / "labels" / "case_b.nii.gz", np.full(SHAPE, 3, np.uint8))
    with pytest.raises(ValueError, match=r"case case_b: label map .* values \[3\] .*0..2"):
        ds[1]


def test_nifti_folder_errors_name_the_case(tmp_path):
    make_nifti_folder(tmp_path, cases=("case_a", "case_b", "case_c"))
    (tmp_path / "images" / "case_b_0001.nii.gz").unlink()
    ds = NiftiFolder("train", tmp_path, labels=None, val_fraction=0.0)
    with pytest.raises(ValueError, match=r"case case_b: missing modality file .*case_b_0001.nii.gz"):
        ds[1]
    (tmp_path / "labels" / "case_c.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"(?s)unpaired case.*case case_c: image files without"):
        NiftiFolder("train", tmp_path, labels=None, val_fraction=0.0)
    (tmp_path / "images" / "case_a.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"case_a.nii.gz: expected image files named <case>_<4-digit"):
        NiftiFolder("train", tmp_path, labels=None)


def test_nifti_folder_brats_labels_and_nnunet_names(tmp_path):
    for case in ("BraTS_001", "BraTS_002"):
        for c in range(4):
            save(tmp_path / "imagesTr" / f"{case}_{c:04d}.nii.gz", modality(c))
        save(tmp_path / "labelsTr" / f"{case}.nii.gz", lesion())
    ds = NiftiFolder("val", tmp_path, labels="brats2021", val_fraction=0.5, seed=0)
    assert len(ds) == 1 and ds.channels == 4 and ds.num_classes == 4
    assert sorted(torch.unique(ds[0]["mask"]).tolist()) == [0, 1, 2, 3]


# -- sampling and augmentation ------------------------------------------------------------------------------
def numpy_sample(mask):
    d, h, w = mask.shape
    image = np.stack([mask * 10.0 + np.arange(w), -mask.astype(np.float64)]).astype(np.float32)
    return {
        "image": image,
        "mask": mask.astype(np.int64),
        "valid": np.ones(mask.shape, bool),
        "brain": np.ones(mask.shape, bool),
    }


def test_fg_oversampling_always_hits_the_lesion_and_patches_have_the_size():
    mask = np.zeros((20, 24, 28), np.int64)
    mask[17:19, 1:3, 25:27] = 2  # a tiny lesion in a corner
    sample = numpy_sample(mask)
    rng = np.random.default_rng(0)
    for _ in range(25):
        p = random_patch(sample, (8, 8, 8), fg_prob=1.0, rng=rng)
        assert p["image"].shape == (2, 8, 8, 8) and p["mask"].shape == (8, 8, 8)
        assert (p["mask"] == 2).any()
        rest = p["image"][0] - p["mask"] * 10.0  # the W coordinate ramp, if image and mask were cut together
        assert np.array_equal(rest, np.broadcast_to(rest[:1, :1], rest.shape))
        assert (np.diff(rest[0, 0]) == 1).all()
        assert np.array_equal(p["image"][1], -p["mask"].astype(np.float32))  # image and mask cut together
    # with fg_prob=0 the uniform patches mostly miss the 8-voxel lesion (chance ~2/28 per axis-combo)
    hits = sum(bool((random_patch(sample, (8, 8, 8), 0.0, rng)["mask"] > 0).any()) for _ in range(40))
    assert hits < 20


def test_small_volume_is_padded_invalid_and_centre_patch_is_deterministic():
    mask = np.ones((4, 6, 10), np.int64)
    sample = numpy_sample(mask)
    p = random_patch(sample, (8, 8, 8), 0.33, np.random.default_rng(1))
    assert p["mask"].shape == (8, 8, 8)
    assert int(p["valid"].sum()) == 4 * 6 * 8  # D and H padded (2+2, 1+1), W cropped 10 -> 8
    assert (p["mask"][~p["valid"]] == 255).all() and (p["image"][:, ~p["valid"]] == 0).all()
    c = centre_patch(sample, (8, 8, 8))
    assert np.array_equal(c["valid"][2:6, 1:7, :], np.ones((4, 6, 8), bool)) and not c["valid"][0].any()
    assert np.array_equal(c["image"][0, 2, 1], sample["image"][0, 0, 0, 1:9])  # W: centre crop starts at 1


def test_flips_keep_image_and_mask_aligned_and_background_zero():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, size=(5, 6, 7))
    sample = numpy_sample(mask)
    sample["brain"][0] = False
    sample["image"][:, 0] = 0.0
    out = VolumeAugment({"flip": 1.0})(sample, rng)
    assert np.array_equal(out["mask"], mask[::-1, ::-1, ::-1])
    assert np.array_equal(out["image"], sample["image"][:, ::-1, ::-1, ::-1])
    out = VolumeAugment({"flip": [0.0, 1.0, 0.0]})(sample, rng)  # H only
    assert np.array_equal(out["mask"], mask[:, ::-1])
    assert np.array_equal(out["image"], sample["image"][:, :, ::-1])
    out = VolumeAugment({"scale": 0.2, "shift": 0.5, "gauss_noise": 0.1})(sample, rng)
    assert np.array_equal(out["mask"], mask)
    assert (out["image"][:, 0] == 0).all()  # intensity ops touch brain voxels only: the D=0 slice stays 0
    assert np.abs(out["image"][:, 1:] - sample["image"][:, 1:]).mean() > 0.05
    with pytest.raises(ValueError, match="augment.scale must be < 1"):
        VolumeAugment({"scale": 1.0})


# -- embedded volumes ---------------------------------------------------------------------------------------
def test_synthetic_volumes_are_deterministic_zscored_and_patched():
    ds = SyntheticVolumes("val", length=3, size=(16, 20, 24), seed=5)
    a, b = ds[1], SyntheticVolumes("val", length=3, size=(16, 20, 24), seed=5)[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert a["image"].shape == (4, 16, 20, 24)
    other = SyntheticVolumes("train", length=3, size=(16, 20, 24), seed=5)[1]
    assert not torch.equal(a["mask"], other["mask"])
    raw = ds.load(1)
    brain = torch.from_numpy(raw["brain"])
    inside = a["image"][:, brain].double()
    assert torch.allclose(inside.mean(1), torch.zeros(4, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(inside.std(1, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-5)
    assert (a["image"][:, ~brain] == 0).all()
    assert set(torch.unique(a["mask"]).tolist()) <= {0, 1, 2, 3}
    train = SyntheticVolumes("train", length=4, size=(16, 20, 24), patch=[8, 8, 8], fg_prob=1.0, augment={"flip": 0.5})
    torch.manual_seed(0)
    s = train[2]
    assert s["image"].shape == (4, 8, 8, 8) and (s["mask"] > 0).any()
    val = SyntheticVolumes("val", length=1, size=(16, 20, 24), seed=5, val_patch=[8, 8, 8])[0]
    assert torch.equal(val["mask"], a["mask"].new_tensor(ds.load(0)["mask"][4:12, 6:14, 8:16]))


def test_registry_and_config_files_build_the_datasets(tmp_path, compose):
    from omegaconf import OmegaConf

    from densekit.builder import split_data_config

    assert DATASETS["synthetic_volume"] is SyntheticVolumes
    assert DATASETS["brats"] is BraTSVolumes and DATASETS["nifti_folder"] is NiftiFolder
    make_brats(tmp_path / "brats", tuple(f"BraTS2021_{i:05d}" for i in range(5)))
    for c in ("c1", "c2"):
        for ch in range(4):
            save(tmp_path / "nf" / "images" / f"{c}_{ch:04d}.nii.gz", modality(ch))
        save(tmp_path / "nf" / "labels" / f"{c}.nii.gz", lesion((1, 2, 3)))
    roots = {
        "synthetic_volume": [],
        "brats": [f"data.root={tmp_path / 'brats'}"],
        "nifti_folder": [f"data.root={tmp_path / 'nf'}", "data.val_fraction=0.5"],
    }
    for name, extra in roots.items():
        cfg = compose(
            [f"data={name}", "data.size=[16,16,16]"]
            if name == "synthetic_volume"
            else [f"data={name}", "data.patch=[8,8,8]"] + extra
        )
        data = OmegaConf.to_container(cfg.data, resolve=True)
        if name == "nifti_folder":  # classes come from the data (here the label values 0..3)
            assert data["num_classes"] is None and data["class_names"] is None
        else:
            assert data["num_classes"] == len(data["class_names"]) == 4
        dname, kwargs, loader, lengths = split_data_config(data)
        for split in ("train", "val"):
            length = {} if lengths[split] is None else {"length": min(lengths[split], 2)}
            ds = build_dataset(dname, split, targets=("mask",), **length, **kwargs)
            s = ds[0]
            check_volume_sample(s)
            assert s["image"].shape[0] == ds.in_channels == 4 and ds.num_classes == 4
            if split == "train":
                assert s["mask"].shape == ((32, 32, 32) if name == "synthetic_volume" else (8, 8, 8))
