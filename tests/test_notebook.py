"""notebooks/inference.ipynb executed once per task, each with a tiny checkpoint of that task: the notebook
reads the task and the training data from the checkpoint and runs only the cells that fit them."""

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import ROOT, VOLUME_SMOKE, train_run

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = ROOT / "notebooks" / "inference.ipynb"
pytestmark = pytest.mark.slow


def make_folder_dataset(root: Path) -> Path:
    """root/images/{train,val}/*.png + root/masks/{train,val}/*.png (ids 0..2, 8-bit grey) + classes.txt: three
    classes, where the embedded scenes have five (the case that crashed the embedded-scenes cell)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((64, 80), np.uint8)
            mask[8:40, 10:44] = 1
            mask[36:, 50:] = 2
            image = (rng.integers(0, 60, (64, 80, 3)) + 90 * mask[..., None]).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{split}{i}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{split}{i}.png")
    (root / "classes.txt").write_text("background\nroad\ncar\n")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A seg checkpoint trained on a 3-class folder dataset (one step, mobilenetv3 LR-ASPP)."""
    root = make_folder_dataset(tmp_path_factory.mktemp("folder_data"))
    return train_run(
        tmp_path_factory,
        "folder_run",
        [
            "data=folder",
            f"data.root={root}",
            "data.num_classes=3",
            "data.augment.crop=[64,64]",
            "data.batch_size=2",
            "data.num_workers=0",
            "backbone=mobilenetv3_large",
            "backbone.pretrained=false",
            "trainer.max_steps=1",
            "trainer.val_check_interval=null",
            "trainer.enable_progress_bar=false",
        ],
    )


@pytest.fixture(scope="module")
def volume_steps1_run(tmp_path_factory):
    """A volume run stopped by max_steps=1 before any validation: it has last.ckpt and no best-*.ckpt."""
    return train_run(tmp_path_factory, "volume_steps1", [*VOLUME_SMOKE, "trainer.max_steps=1"])


class Kernel:
    """One python3 kernel for all the notebook runs of this module. Every run starts with ``%reset -f`` (an empty
    namespace, as after a kernel restart; only Python's module cache stays, which saves the ~10-15 s of torch /
    timm / Lightning imports per run) and ``os.chdir`` to the run's working directory."""

    def __init__(self):
        env = {k: v for k, v in os.environ.items() if k != "DENSEKIT_CKPT"}
        env.update(MPLBACKEND="Agg", OMP_NUM_THREADS="1")
        self.client = nbclient.NotebookClient(nbformat.v4.new_notebook(), kernel_name="python3", timeout=300)
        self.client.km = self.client.create_kernel_manager()
        self.client.start_new_kernel(env=env, cwd=str(ROOT))
        self.client.start_new_kernel_client()

    def run(self, nb, cwd: Path, ckpt=None, allow_errors: bool = False):
        """Execute ``nb`` top to bottom in ``cwd`` with DENSEKIT_CKPT=ckpt (unset if None); returns (everything
        printed, error outputs as 'Name: message', seconds)."""
        setenv = (
            "os.environ.pop('DENSEKIT_CKPT', None)" if ckpt is None else f"os.environ['DENSEKIT_CKPT'] = {str(ckpt)!r}"
        )
        fresh = nbformat.v4.new_code_cell(
            f"%reset -f\nimport os\nimport matplotlib.pyplot as plt\nplt.close('all')\nos.chdir({str(cwd)!r})\n"
            f"{setenv}\ndel os, plt"
        )
        client = self.client
        client.nb = nbformat.v4.new_notebook(cells=[fresh, *nb.cells], metadata=nb.metadata)
        client.allow_errors = allow_errors
        client.reset_execution_trackers()
        start = time.perf_counter()
        for index, cell in enumerate(client.nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        seconds = time.perf_counter() - start
        assert not fresh.outputs, fresh.outputs
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        printed = "".join(o.get("text", "") for o in outputs)
        errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
        print(f"notebook: {seconds:.1f} s")  # with -s: the per-task execution time
        return printed, errors, seconds

    def close(self):
        self.client._cleanup_kernel()


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    yield k
    k.close()


def read_notebook():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code"), (
        "store the notebook without outputs"
    )
    return nb


def numbers(pattern: str, text: str) -> list[float]:
    return [float(x) for x in re.findall(pattern, text)]


def test_notebook_seg_on_the_embedded_scenes(smoke_run, kernel):
    run_dir, _, _ = smoke_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    printed, errors, _ = kernel.run(read_notebook(), NOTEBOOK.parent, ckpt)
    assert not errors, errors
    assert "task: seg  data: synthetic" in printed and f"checkpoint: {ckpt}" in printed
    assert "5 classes: ['background', 'disc', 'box', 'triangle', 'star']" in printed
    assert re.search(r"astronaut \(512, 512, 3\): \w+ \d+%", printed) and "camera (grey) (512, 512):" in printed
    acc = numbers(r"pixel accuracy ([\d.]+)", printed)
    assert len(acc) == 3 and all(0 <= a <= 1 for a in acc), printed  # three embedded val scenes
    assert "sum to 1: True" in printed
    assert "the flow section does not apply" in printed and "the volume section does not apply" in printed


def test_notebook_seg_trained_on_a_folder_dataset(folder_run, kernel):
    """Before: the embedded-scenes cell ran 5-class scenes through a 3-class model ("mask holds ids outside
    [0, 3)"). Now the notebook shows the checkpoint's own val folder; DENSEKIT_CKPT may be a run directory."""
    run_dir, _, _ = folder_run
    printed, errors, _ = kernel.run(read_notebook(), NOTEBOOK.parent, run_dir)
    assert not errors, errors
    assert "task: seg  data: folder  backbone: mobilenetv3_large" in printed
    assert re.search(r"checkpoint: .*/checkpoints/best-[^/]*\.ckpt", printed)  # the run's best, not last.ckpt
    assert "3 classes:" in printed
    acc = numbers(r"sample \d+: pixel accuracy ([\d.]+)", printed)
    assert len(acc) == 1 and 0 <= acc[0] <= 1, printed  # the folder's one val image
    assert "ids outside" not in printed


def test_notebook_skips_unreachable_data_and_names_a_missing_checkpoint(folder_run, tmp_path, kernel):
    """A checkpoint whose training folder is not here: the validation cell prints why it skips. No checkpoint
    at all: the first cell's error names outputs/ and DENSEKIT_CKPT. (Only the cells involved, one kernel.)"""
    run_dir, _, _ = folder_run
    ckpt = torch.load(next((run_dir / "checkpoints").glob("best-*.ckpt")), map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["config"]["data"]["root"] = str(tmp_path / "elsewhere")
    moved = tmp_path / "moved.ckpt"
    torch.save({k: ckpt[k] for k in ("state_dict", "hyper_parameters")}, moved)
    full = read_notebook()
    code = [c for c in full.cells if c.cell_type == "code"]
    setup, dispatch, photos, own_data = code[:4]
    assert "validation_samples(3)" in own_data.source
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(setup.source),  # no DENSEKIT_CKPT, no outputs/: an error naming both
            nbformat.v4.new_code_cell(f"os.environ['DENSEKIT_CKPT'] = {str(moved)!r}"),
            nbformat.v4.new_code_cell(setup.source),
            dispatch,
            own_data,
        ],
        metadata=full.metadata,
    )
    (tmp_path / "empty").mkdir()
    printed, errors, _ = kernel.run(nb, tmp_path / "empty", None, allow_errors=True)
    assert len(errors) == 1 and errors[0].startswith("FileNotFoundError: no checkpoint under "), errors
    assert "DENSEKIT_CKPT=" in errors[0]
    assert "task: seg  data: folder" in printed
    assert re.search(r"skipped the data=folder validation samples: \w+Error: .*elsewhere", printed), printed


def test_notebook_depth(depth_run, kernel):
    run_dir, _, _ = depth_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    printed, errors, _ = kernel.run(read_notebook(), NOTEBOOK.parent, ckpt)
    assert not errors, errors
    assert "task: depth  data: synthetic" in printed
    ranges = re.findall(r"\(512, 512, 3\): depth ([\d.]+)-([\d.]+) m", printed)
    assert ranges and 0 < float(ranges[0][0]) <= float(ranges[0][1]), printed
    absrel = numbers(r"AbsRel ([\d.]+)", printed)
    assert len(absrel) == 3 and all(np.isfinite(absrel)), printed
    assert "classes:" not in printed and "the volume section does not apply" in printed


def test_notebook_flow_on_the_motorcycle_pair(flow_run, kernel):
    from skimage import data as skdata

    run_dir, _, _ = flow_run
    printed, errors, _ = kernel.run(read_notebook(), NOTEBOOK.parent, run_dir)
    assert not errors, errors
    assert "task: flow  data: synthetic" in printed
    assert "single photographs do not fit" in printed
    found = re.search(r"Motorcycle \(500, 741\): EPE ([\d.]+) px.*zero motion: EPE ([\d.]+) px", printed)
    assert found, printed
    epe, zero = float(found.group(1)), float(found.group(2))
    _, _, disp = skdata.stereo_motorcycle()
    # zero motion's EPE is the mean |u| = mean disparity over the pixels with ground truth
    assert zero == pytest.approx(float(disp[np.isfinite(disp)].mean()), abs=0.01)  # inf = no ground truth
    assert 0 < epe < 200
    assert len(numbers(r"sample \d+: EPE ([\d.]+) px", printed)) == 3  # the embedded val pairs


def test_notebook_volume_picks_the_newest_run_under_outputs(volume_steps1_run, tmp_path, kernel):
    """No DENSEKIT_CKPT: the newest run under outputs/ wins even though it has only last.ckpt and an older run
    has a best-*.ckpt (the old rule, the newest best-*.ckpt anywhere, would load that older one)."""
    run_dir, _, _ = volume_steps1_run
    assert not list((run_dir / "checkpoints").glob("best-*.ckpt"))
    old = tmp_path / "outputs" / "seg" / "2020-01-01" / "00-00-00" / "checkpoints"
    old.mkdir(parents=True)
    (old / "best-epoch00-step9.ckpt").write_bytes(b"not loaded")  # an unreadable decoy: loading it would fail
    day_ago = time.time() - 86400
    os.utime(old / "best-epoch00-step9.ckpt", (day_ago, day_ago))
    new = tmp_path / "outputs" / "volume" / "2020-01-02" / "00-00-00"
    shutil.copytree(run_dir / "checkpoints", new / "checkpoints")
    printed, errors, _ = kernel.run(read_notebook(), tmp_path, None)
    assert not errors, errors
    assert f"checkpoint: {new / 'checkpoints' / 'last.ckpt'}" in printed
    assert "task: volume  data: synthetic_volume" in printed
    assert "4 classes: ['background', 'necrotic_core', 'edema', 'enhancing']" in printed
    found = re.search(r"generated volume \(4, 24, 24, 24\): mDice ([\d.]+) .*edema ([\d.]+)", printed)
    assert found and all(0 <= float(x) <= 1 for x in found.groups()), printed
    assert "sum to 1: True" in printed
    assert "the flow section does not apply" in printed
