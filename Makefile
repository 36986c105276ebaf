# Every target creates (and reuses) the local virtual environment itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test bench lint up migrate clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
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

# Web + worker + beat on one machine against DATABASE_URL / REDIS_URL (see README).
up: $(STAMP)
	$(VENV)/bin/honcho -f deploy/Procfile start

clean:
	rm -rf $(VENV) .pytest_cache db.sqlite3 staticfiles
