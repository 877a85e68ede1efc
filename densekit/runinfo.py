"""What a run records about itself: its name, the source commit, and a readable tree of its config.

Plain Python (no Hydra/OmegaConf): ``densekit.train`` hands in the resolved config as a plain dict.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) holding densekit/


def run_name(task: str, backbone: str, head: str, explicit: str | None = None) -> str:
    """``explicit`` (``logger.run_name``) if set, else ``<task>-<backbone>-<head>`` (``seg-mci0-lraspp``)."""
    return str(explicit) if explicit else f"{task}-{backbone}-{head}"


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):  # no git binary, or a hung file system
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_info(root: str | Path | None = None) -> dict:
    """The commit the code ran from: ``{"commit": sha or "unknown", "dirty": bool or None, "source": path}``.

    ``dirty`` is True when tracked files differ from the commit (untracked files are ignored: run outputs and
    data often live in the checkout); None when ``root`` is not a git checkout (e.g. an installed wheel).
    """
    root = Path(root) if root is not None else SOURCE_ROOT
    # the package's own files must be tracked there: densekit installed into a venv that lives inside some
    # other repository is not a checkout of densekit
    if _git(root, "ls-files", "--error-unmatch", "densekit/__init__.py") is None:
        return {"commit": "unknown", "dirty": None, "source": str(root)}
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit or "unknown",
        "dirty": None if status is None else bool(status),
        "source": str(root),
    }


def write_git_info(run_dir: str | Path, root: str | Path | None = None) -> dict:
    """Write ``<run_dir>/git.txt`` (``key: value`` lines) and return the same facts as a dict."""
    info = git_info(root)
    dirty = {True: "true", False: "false", None: "unknown"}[info["dirty"]]
    text = f"commit: {info['commit']}\ndirty: {dirty}\nsource: {info['source']}\n"
    (Path(run_dir) / "git.txt").write_text(text)
    return info


def _leaf(value) -> str:
    if isinstance(value, (list, tuple)):
        # short lists of scalars stay on one line: sizes, strides, class names
        return "[" + ", ".join(_leaf(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_leaf(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"  # YAML spelling, as in config.yaml
    return "null" if value is None else str(value)


_ONE_LINE = 100  # a section of scalars that fits in this many characters prints on one line


def _is_branch(value) -> bool:
    return isinstance(value, dict) and bool(value)


def _one_line(key, value) -> str | None:
    """``key: a=1, b=2`` for a section of plain values short enough for one line, else None."""
    if any(_is_branch(v) for v in value.values()):
        return None
    text = f"{key}: " + ", ".join(f"{k}={_leaf(v)}" for k, v in value.items())
    return text if len(text) <= _ONE_LINE else None


def config_tree(config: dict, title: str = "config") -> str:
    """The config as an indented tree: nested sections are branches, scalars and lists ``key: value`` leaves;
    a section of plain values that fits on one line prints as ``key: a=1, b=2`` (keeps the tree short).

    Uses ``rich.tree`` (guide lines, no colour: the text also goes to log files) when rich is installed,
    else two-space indentation.
    """
    try:
        import io

        from rich.console import Console
        from rich.tree import Tree
    except ImportError:
        lines = [title]

        def walk(node: dict, depth: int) -> None:
            for key, value in node.items():
                if _is_branch(value) and not _one_line(key, value):
                    lines.append(f"{'  ' * depth}{key}")
                    walk(value, depth + 1)
                elif _is_branch(value):
                    lines.append(f"{'  ' * depth}{_one_line(key, value)}")
                else:
                    lines.append(f"{'  ' * depth}{key}: {_leaf(value)}")

        walk(config, 1)
        return "\n".join(lines)

    def grow(tree, node: dict) -> None:
        for key, value in node.items():
            if _is_branch(value) and not _one_line(key, value):
                grow(tree.add(str(key)), value)
            elif _is_branch(value):
                tree.add(_one_line(key, value))
            else:
                tree.add(f"{key}: {_leaf(value)}")

    tree = Tree(title, guide_style="dim")
    grow(tree, config)
    buffer = io.StringIO()
    # markup/highlight off: values such as "[64, 64]" must print verbatim, not as rich markup
    Console(file=buffer, width=110, color_system=None, highlight=False, markup=False, emoji=False).print(tree)
    return buffer.getvalue().rstrip()
