"""Test setup: no network, wandb offline, the real conf tree composed with Hydra."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

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


def _train_run(tmp_path_factory, name: str, overrides: list[str]):
    """Train once with ``overrides`` into a fresh directory: (run_dir, final metrics, printed output)."""
    import contextlib
    import io

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from densekit.train import train

    run_dir = tmp_path_factory.mktemp(name)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=[*overrides, f"output_dir={run_dir}"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        metrics = train(cfg)
    return run_dir, metrics, out.getvalue()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One seconds-long segmentation run (experiment=smoke), shared by the tests that need a checkpoint."""
    return _train_run(tmp_path_factory, "smoke_run", ["experiment=smoke"])


@pytest.fixture(scope="session")
def depth_run(tmp_path_factory):
    """One seconds-long depth run (task=depth experiment=smoke)."""
    return _train_run(tmp_path_factory, "depth_run", ["task=depth", "experiment=smoke"])


@pytest.fixture(scope="module")
def single_thread():
    """Run a module single-threaded: the selective scan issues many small ops, and on the shared 2-core CPU
    intra-op threading waits for a busy core on every op (measured 2-40x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


VOLUME_SMOKE = [
    "task=volume", "data.train_length=4", "data.val_length=2", "data.size=[24,24,24]", "data.patch=[16,16,16]",
    "data.batch_size=2", "trainer.val_check_interval=null", "trainer.enable_progress_bar=false",
    "backbone.widths=[8,16,32,64,64]", "trainer.num_sanity_val_steps=0",
]


@pytest.fixture(scope="session")
def volume_run(tmp_path_factory):
    """One seconds-long 3D run (task=volume, revmb3d + revunet3d, tiny widths and volumes)."""
    return _train_run(tmp_path_factory, "volume_run", VOLUME_SMOKE)


FLOW_SMOKE = [
    "task=flow", "data.size=[64,64]", "data.augment.crop=[64,64]", "data.train_length=16", "data.val_length=8",
    "data.batch_size=4", "trainer.val_check_interval=null", "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
]


@pytest.fixture(scope="session")
def flow_run(tmp_path_factory):
    """One seconds-long flow run (task=flow, flow_pyramid + CompactFlowNet head, 64x64 pairs)."""
    return _train_run(tmp_path_factory, "flow_run", FLOW_SMOKE)
