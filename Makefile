# Two commands: `make train` and `make test`. Each creates or refreshes .venv first (pip, local torch wheels).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Test environment: no network, wandb offline, deterministic thread count.
TEST_ENV := HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

.PHONY: venv train test lint clean

venv: $(STAMP)

# Reinstall only when the dependency list changes (the stamp is newer than pyproject.toml otherwise).
# constraints.txt: the exact tested versions (pyproject.toml has the compatible ranges).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py task=seg backbone=mci2 $(ARGS)

test: lint
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# Layering (import-linter), lint and format check (ruff, configured in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV)
