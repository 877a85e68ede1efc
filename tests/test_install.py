"""`pip install .` into a fresh virtual environment gives a working densekit-predict (from the wheel, not
the checkout). Offline: the wheel is built with this environment's setuptools, installed without
dependencies, and the fresh environment sees this one's packages (torch etc.) through a .pth line."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_pip_install_gives_a_working_densekit_predict(seg_ckpt, seg_predictor, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    src = tmp_path / "src"  # a copy of what the sdist holds: the build leaves nothing in the checkout
    shutil.copytree(ROOT / "densekit", src / "densekit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)]
    _run([*pip_wheel, str(src)], env=env)
    (wheel,) = wheels.glob("densekit-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], env=env)
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env).stdout.strip()
    Path(site, "densekit_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"  # not the checkout: densekit must come from the installed wheel
    work.mkdir()
    where = _run([str(py), "-c", "import densekit; print(densekit.__file__, densekit.__version__)"], cwd=work, env=env)
    assert where.stdout.startswith(site), where.stdout
    import densekit

    assert where.stdout.split()[1] == densekit.__version__
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(photos / f"img{k}.png")
    args = [str(venv / "bin" / "densekit-predict"), f"ckpt={seg_ckpt}", f"input={photos}", f"output={work / 'out'}"]
    proc = _run([*args, "progress=false"], cwd=work, env=env)
    assert "predicted 3 image(s) with task='seg'" in proc.stdout
    for k in range(3):
        got = np.asarray(Image.open(work / "out" / f"img{k}_labels.png"))
        np.testing.assert_array_equal(got, seg_predictor.predict(photos / f"img{k}.png"))
    assert sorted(p.name for p in work.iterdir()) == ["out"]  # nothing else written
    train = subprocess.run([str(venv / "bin" / "densekit-train")], capture_output=True, text=True, cwd=work, env=env)
    assert train.returncode == 1 and "use it from a checkout" in train.stderr, train.stderr[-2000:]
    assert "Traceback" not in train.stderr
