"""The typed config's tables agree with the registries: every registered backbone, head and task has its rules.

The schema runs before torch is imported, so it keeps its own tables keyed by registered names; these tests
are what keeps those tables and the registries in step (the rule messages themselves: test_cli_errors.py)."""

import pytest

from densekit import config_model_rules, config_rules
from densekit.config_schema import rules_for, validate_config
from densekit.errors import ConfigError


def test_every_registered_backbone_and_head_has_a_key_table():
    from densekit.models import BACKBONES, HEADS

    missing_bb = sorted(set(BACKBONES) - set(config_model_rules.BACKBONES))
    missing_head = sorted(set(HEADS) - set(config_model_rules.HEADS))
    assert not missing_bb, f"backbones without a table in densekit/config_model_rules.py: {missing_bb}"
    assert not missing_head, f"heads without a table in densekit/config_model_rules.py: {missing_head}"
    # and no table for a name nobody registers (a renamed component would leave its rules behind)
    assert set(config_model_rules.BACKBONES) <= set(BACKBONES)
    assert set(config_model_rules.HEADS) <= set(HEADS)


def test_task_facts_of_the_schema_are_the_task_classes():
    from densekit.tasks import TASKS, get_task

    assert set(config_rules.TASK_DIMS) == set(TASKS) == set(config_rules.TASK_AUGMENT)
    targets = config_rules.TASK["targets"]
    for name in TASKS:
        task = get_task(name)
        assert config_rules.TASK_DIMS[name] == task.dims, name
        assert config_rules.TASK["name"].check(name) is None
        assert targets.check(list(task.targets)) is None, (name, task.targets)
        model_keys = set(config_rules.TASK["model"].children)
        assert set(task.model_kwargs) <= model_keys, (name, sorted(set(task.model_kwargs) - model_keys))


@pytest.mark.parametrize("task,size,axes", [("seg", [64, 64], "[H, W]"), ("volume", [8, 64, 64], "[D, H, W]")])
def test_rules_follow_the_task_and_the_chosen_components(task, size, axes):
    config = {"task": {"name": task}, "backbone": {"name": "revmb3d"}, "head": {"name": "revunet3d"}}
    rules = rules_for(config)
    assert rules["data.size"].check(size) is None and axes in rules["data.size"].expected
    assert "backbone.widths" in rules and "head.decoder_depths" in rules and "head.inter_channels" not in rules
    augment = rules["data.augment"].inner.children
    assert ("shift" in augment) == (task == "volume")


def test_cross_checks_of_both_tables_are_reported():
    with pytest.raises(ConfigError, match=r"^data.min_depth=10: expected a value below data.max_depth=5"):
        validate_config({"task": {"name": "depth"}, "data": {"min_depth": 10, "max_depth": 5}})
    with pytest.raises(ConfigError, match=r"^backbone.widths=\[9,16\]: expected even channel counts"):
        validate_config({"task": {"name": "volume"}, "backbone": {"name": "revmb3d", "widths": [9, 16]}})
