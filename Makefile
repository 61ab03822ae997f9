# Two commands on a fresh machine: `make demo` and `make test`. Both go through `make setup`, which is
# idempotent: it re-installs only when pyproject.toml or constraints.txt changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.assay-setup-stamp
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup demo test lint bench clean

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -c constraints.txt -e '.[test,postgres,compress]'
	# torchattacks, the adversarial tests' reference, without its metadata's pins (an old requests and a
	# torchvision it does not import); see pyproject.toml.
	$(BIN)/python -m pip install -qq --no-deps torchattacks==3.5.1
	touch $(STAMP)

# Debian packages: the Fashion-MNIST files, the Chromium of the browser tests and the PostgreSQL server
# that the store's tests run against (a throwaway one, started by scripts/with-postgres.sh). Installed only
# when missing and apt is usable (root, or passwordless sudo); otherwise the affected parts say so.
system-deps:
	@missing=""; \
	test -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz || missing="$$missing dataset-fashion-mnist"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian packages:$$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Note: could not install$$missing (apt not usable); point --data-dir at Fashion-MNIST IDX files."; \
	  fi; \
	fi

demo: setup
	$(BIN)/assay demo

# With PostgreSQL binaries on the machine, the whole suite runs beside a throwaway server (the store's
# Postgres tests use it); without them those tests skip and say why.
test: setup
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then \
	  scripts/with-postgres.sh $(BIN)/python -m pytest -n 2 -q; \
	else \
	  $(BIN)/python -m pytest -n 2 -q; \
	fi

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/training_precision.py
	$(BIN)/python benchmarks/eval_overhead.py
	$(BIN)/python benchmarks/compress_search.py

clean:
	rm -rf $(VENV) .assay runs reports
