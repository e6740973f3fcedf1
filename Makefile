# Two commands do everything: `make run` and `make test` (`make docs` builds the documentation site).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUN_DIR ?= runs/two_layer_quick

.PHONY: run test docs lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The pinned CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,ray,slurm,docs,lint,fast]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/studentspec run configs/two_layer_quick.yaml --out $(RUN_DIR) --overwrite
	$(BIN)/studentspec plot $(RUN_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest

# the site in site/; --strict: a broken link, anchor or docstring fails the build
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# formatting, lint rules and types over src/ (settings in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff format --check src
	$(BIN)/ruff check src
	$(BIN)/mypy src/studentspec

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_step.py

clean:
	rm -rf $(VENV) runs site
