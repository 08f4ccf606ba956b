# One place to change the torch build: `make install TORCH=torch==2.13.0`.
# A bare `torch` or an open range would make pip fetch a multi-GB CUDA build.
TORCH ?= torch==2.13.0
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint samples bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"  # ray: the batch executor's test runs it
	touch $(STAMP)

demo: install
	$(BIN)/compress run sample_models/digits_cnn.pt2 -c configs/int8-static.yaml -o out/demo --force

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

samples: install
	$(BIN)/python sample_models/build.py

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf out .pytest_cache
