"""Test setup and fixtures: no network, wandb offline, the real conf tree composed with Hydra, shared tiny
training runs, a read-only directory. Builders that tests call directly are in helpers.py."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import CONF, FLOW_SMOKE, VOLUME_SMOKE, train_run  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def compose():
    """compose(overrides) -> the resolved run config, exactly as train.py would get it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    def _compose(overrides=()):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="train", overrides=list(overrides))

    return _compose


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One seconds-long segmentation run (experiment=smoke), shared by the tests that need a checkpoint."""
    return train_run(tmp_path_factory, "smoke_run", ["experiment=smoke"])


@pytest.fixture(scope="module")
def seg_ckpt(smoke_run):
    """The best checkpoint of ``smoke_run``."""
    run_dir, _, _ = smoke_run
    return next((run_dir / "checkpoints").glob("best-*.ckpt"))


@pytest.fixture(scope="module")
def seg_predictor(seg_ckpt):
    """A ``densekit.Predictor`` on ``seg_ckpt``."""
    import densekit

    return densekit.Predictor.from_checkpoint(seg_ckpt)


@pytest.fixture(scope="session")
def depth_run(tmp_path_factory):
    """One seconds-long depth run (task=depth experiment=smoke)."""
    return train_run(tmp_path_factory, "depth_run", ["task=depth", "experiment=smoke"])


@pytest.fixture(scope="module")
def single_thread():
    """Run a module single-threaded: the selective scan issues many small ops, and on the shared 2-core CPU
    intra-op threading waits for a busy core on every op, which makes such a module much slower under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def volume_run(tmp_path_factory):
    """One seconds-long 3D run (task=volume, revmb3d + revunet3d, tiny widths and volumes)."""
    return train_run(tmp_path_factory, "volume_run", VOLUME_SMOKE)


@pytest.fixture(scope="session")
def flow_run(tmp_path_factory):
    """One seconds-long flow run (task=flow, flow_pyramid + CompactFlowNet head, 64x64 pairs)."""
    return train_run(tmp_path_factory, "flow_run", FLOW_SMOKE)


def readonly_dir(path: Path) -> Path:
    """A directory nobody can create files in, or skip: chmod 0555 (not enough for root), then ``chattr +i``
    (an immutable directory refuses root too). The caller undoes it with ``writable_again``."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    probe = path / "probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return path
    probe.unlink()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        try:
            probe.write_bytes(b"")
        except OSError:
            return path
        probe.unlink()
    writable_again(path)
    pytest.skip("cannot make a directory read-only here (root without chattr)")


def writable_again(path: Path) -> None:
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


@pytest.fixture
def locked(tmp_path):
    """A read-only directory in tmp_path (made writable again afterwards, so tmp_path can be removed)."""
    path = readonly_dir(tmp_path / "locked")
    yield path
    writable_again(path)
