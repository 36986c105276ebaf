# Every target creates (and reuses) the local virtual environment itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Every dependency, pinned with its hashes (`make lock` regenerates it from pyproject.toml).
LOCK := requirements.lock

# The slowest tests are listed at the end of every run. The suite runs on two cores (pytest-xdist; each worker
# takes its own test database and Redis database). Tests are handed out in collection order (`--dist load`, not
# `loadfile`): pytest-django puts the transactional tests last, and a worker that ran one of them before a plain
# test would leave that test a flushed database, without the purposes and notices the migrations seed.
# `make test PYTEST_ARGS="-p no:xdist"` runs it serially.
PYTEST_ARGS ?= -n 2 --dist load --durations=25

.PHONY: venv demo test bench lint up migrate lock clean

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) manage.py demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) manage.py makemigrations --check --dry-run

migrate: $(STAMP)
	$(PY) manage.py migrate

# Web + worker + beat on one machine against DATABASE_URL / REDIS_URL (see README). The
# Procfile's commands are the virtual environment's, and run from the project's root.
up: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho -f deploy/Procfile -d "$(CURDIR)" start

# Pin every dependency (and the dev extra) with hashes, for CI and `make venv`. Run it after
# changing pyproject.toml's dependencies, and commit requirements.lock.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "pip-tools>=7.4,<8"
	$(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras --extra dev \
		--no-emit-index-url --no-emit-find-links --output-file $(LOCK) pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache db.sqlite3 staticfiles
