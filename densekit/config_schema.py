"""Typed checks of a composed run config, before any data or model is built.

Hydra-free: ``validate_config(config)`` takes the plain, resolved config dict (``OmegaConf.to_container(cfg,
resolve=True)``) and raises ``ConfigError`` naming the first wrong key, the value given and what is expected:

    data.size=abc: expected a list of 2 positive ints [H, W], got 'abc'

Why a table of rules and not Hydra structured configs: the groups are flat YAML files whose keys differ per
choice (``backbone.expand`` is an int for lightm and a per-level list for flow_pyramid; ``data.augment.scale``
is a zoom range [lo, hi] in 2D and an intensity factor in 3D), several helpers add keys to them, and a
dataclass per choice would duplicate every YAML. The rule tables cover the keys of every file in conf/
(plus what the command line commonly sets, e.g. ``trainer.accumulate_grad_batches``); a key without a rule
is not checked here (Hydra's struct mode already refuses a key that exists in no config). A value of ``???``
(a mandatory value not given) is left to the code that needs it, which reports it itself.

The rules live in ``densekit.config_types`` (``Rule`` and the value types: ``integer``, ``list_of``, ...),
``densekit.config_rules`` (which key of a run-level group takes which rule), ``densekit.config_model_rules``
(the keys of each backbone and head, by registered name, and the rules relating them) and here: which tables
apply to a run, the walk and the one-line report. The names used elsewhere are importable from here.

Which rules apply depends on the run: ``data.size`` needs 2 ints for 2D tasks and 3 for ``task=volume``;
``data.augment`` follows the augmenter of the task (image, flow or volume transforms); ``head`` and
``backbone`` keys follow their ``name``. Cross-key rules check what one key cannot (list lengths that must
agree, lo <= hi, min < max). ``check_files=True`` also checks that a ``backbone.pretrained`` path exists (a
``FileNotFoundError``): a typo then fails in a second instead of after the data is listed and the model built.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from . import config_model_rules as components
from . import config_rules as tables
from .config_types import (
    MISSING,
    Rule,
    boolean,
    check_value,
    choice,
    describe,
    format_value,
    int_list,
    integer,
    list_of,
    mapping,
    nullable,
    number,
    one_of,
    pair,
    prob,
    select,
    string,
)
from .errors import ConfigError

__all__ = [
    "RUN_OPTIONS",
    "Rule",
    "boolean",
    "check_value",
    "choice",
    "format_value",
    "int_list",
    "integer",
    "list_of",
    "mapping",
    "nullable",
    "number",
    "one_of",
    "pair",
    "parse_option",
    "prob",
    "rules_for",
    "select",
    "string",
    "validate_config",
]


# Top-level run options whose rule lives here (the rest of conf/train.yaml's top level: ``config_rules.TOP``).
# channels_last: 2D tasks only (densekit.tasks.base applies it to 4D image batches; see ``_option_checks``).
RUN_OPTIONS = {"channels_last": one_of(choice("auto"), boolean())}


def _option_checks(config: dict) -> list[tuple[str, object, str]]:
    """(key, value, what is expected) for the run options that depend on the task."""
    task = _name(config, "task")
    if config.get("channels_last") is True and tables.TASK_DIMS.get(task, 2) == 3:
        return [
            (
                "channels_last",
                True,
                f"auto or false for task={task}: channels_last applies to 2D image tasks (4D batches); 3D volumes "
                f"(channels_last_3d) are not supported",
            )
        ]
    return []


def _name(config: dict, group: str):
    node = config.get(group)
    return node.get("name") if isinstance(node, dict) else None


def rules_for(config: dict) -> dict[str, Rule]:
    """Every dotted key path -> its rule, for this run's task, head and backbone."""
    task = _name(config, "task")
    dims = tables.TASK_DIMS.get(task, 2)
    data = {
        **tables.DATA_COMMON,
        "size": int_list(dims, axes="[D, H, W]" if dims == 3 else "[H, W]"),
        "augment": nullable(mapping(tables.TASK_AUGMENT.get(task, tables.AUGMENT_2D))),
    }
    head = {"name": string(), **components.HEADS.get(_name(config, "head"), {})}
    backbone = {**components.BACKBONE_COMMON, **components.BACKBONES.get(_name(config, "backbone"), {})}
    groups = {
        "data": data,
        "optim": tables.OPTIM,
        "head": head,
        "backbone": backbone,
        "trainer": tables.TRAINER,
        "logger": tables.LOGGER,
        "task": tables.TASK,
    }
    rules: dict[str, Rule] = {}

    def add(prefix: str, table: dict) -> None:
        for key, rule in table.items():
            path = f"{prefix}.{key}" if prefix else key
            rules[path] = rule
            inner = getattr(rule, "children", None) or getattr(getattr(rule, "inner", None), "children", None)
            if inner:
                add(path, inner)

    add("", {**tables.TOP, **RUN_OPTIONS})
    for group, table in groups.items():
        rules[group] = mapping(what=f"a mapping (the {group} config group)")
        add(group, table)
    return rules


def _file_checks(config: dict) -> None:
    bb = config.get("backbone") or {}
    pretrained = bb.get("pretrained")
    if pretrained is None or isinstance(pretrained, bool):
        return
    if not isinstance(pretrained, str):
        raise ConfigError(
            f"backbone.pretrained={format_value(pretrained)}: expected true, false, auto or the "
            f"path of a weight file, got {describe(pretrained)}"
        )
    if pretrained.strip().lower() in ("true", "false", "auto", "none", ""):
        return
    path = Path(pretrained).expanduser()
    if not path.is_file():
        what = "a directory, not a weight file" if path.is_dir() else "weight file not found"
        raise FileNotFoundError(
            f"backbone.pretrained: {what}: {path} (expected true, false, auto or the path "
            f"of a .pt/.pth/.bin/.safetensors file)"
        )


# -- reporting --------------------------------------------------------------------------------------------
def parse_option(key: str, text: str, rule: Rule, raw: bool = False, unparsable: str = "error"):
    """A script option ``key=text`` (evaluate.py, export.py) as ``rule``'s type, or a ConfigError naming it.

    ``null``/``none``/``~`` is None where the rule allows it; ``raw`` keys (paths, devices) are taken as written
    (a directory called 'true' stays one); booleans accept only true/false (YAML would also take yes/on);
    anything else is read as YAML. Text YAML cannot read is an error (``unparsable="error"``) or is checked as
    the plain string (``"text"``)."""
    import yaml

    low = text.strip().lower()
    if low in ("null", "none", "~") and rule.check(None) is None:
        return None
    if raw:
        value = text
    elif rule.expected.endswith("true or false"):
        if low not in ("true", "false"):
            raise ConfigError(f"{key}={text}: expected true or false, got {text!r}")
        value = low == "true"
    else:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            if unparsable == "error":
                raise ConfigError(f"{key}={text}: expected {rule.expected}; cannot parse it ({err.problem})") from None
            value = text
    problem = check_value(key, value, rule)
    if problem:
        raise ConfigError(problem)
    return value


def _walk(config: dict, rules: dict[str, Rule]) -> list[str]:
    problems = []
    for path, rule in rules.items():
        parent = path.rpartition(".")[0]
        if parent and not isinstance(select(config, parent), dict):
            continue  # the parent is absent or already reported
        sentinel = object()
        value = select(config, path, sentinel)
        if value is sentinel or value == MISSING:
            continue
        problem = check_value(path, value, rule)
        if problem:
            problems.append(problem)
    return problems


def validate_config(config: dict, groups: Iterable[str] | None = None, check_files: bool = True) -> None:
    """Raise ``ConfigError`` for the first key of ``config`` (a plain, resolved run config) that breaks its
    rule, naming the other wrong keys too; ``groups`` limits the check to those top-level groups (e.g.
    ``("data",)`` for a data config composed by evaluate.py: give ``{"task": ..., "data": ...}``).
    With ``check_files`` a ``backbone.pretrained`` path must exist (``FileNotFoundError``)."""
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping, got {type(config).__name__}")
    rules = rules_for(config)
    if groups is not None:
        keep = tuple(groups)
        rules = {k: r for k, r in rules.items() if k.split(".")[0] in keep}
    problems = _walk(config, rules)
    for key, value, what in tables.cross_checks(config) + components.cross_checks(config) + _option_checks(config):
        if groups is None or key.split(".")[0] in tuple(groups):
            problems.append(f"{key}={format_value(value)}: expected {what}")
    if problems:
        more = ""
        if len(problems) > 1:
            others = [p.split("=", 1)[0] for p in problems[1:]]
            more = f" (also wrong: {', '.join(others)})"
        raise ConfigError(problems[0] + more)
    if check_files and (groups is None or "backbone" in tuple(groups)):
        _file_checks(config)
