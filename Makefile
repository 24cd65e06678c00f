# One command runs the main job, one runs the tests; each installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned so that a CPU machine gets the CPU build it has on disk; a CUDA machine gets PyPI's CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install test test-fast clean data data-offline

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install  ## every offline test, the 124M-shape parity tests included
	$(PY) -m pytest -q

test-fast: install  ## the quick tier only
	$(PY) -m pytest -q -m "not slow"

# ---- data ------------------------------------------------------------------------------------
DATA ?= shards/wikitext2
# Offline (no internet, no train split): the developer machines' copy of the valid/test splits.
RAW_DIR ?= ../shared/wikitext-2-raw

data: install  ## Wikitext-2 raw -> GPT-2 token shards in $(DATA) (downloads 4.7 MB once)
	$(PY) -m data.prepare --out_dir $(DATA)

data-offline: install  ## no internet: shards from local valid/test splits (train/val = valid 90/10, test = test)
	$(PY) -m data.prepare --raw_dir $(RAW_DIR) --offline --out_dir $(DATA)

clean:
	rm -rf $(VENV) .pytest_cache
