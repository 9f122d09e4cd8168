SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(VENV)/bin/pip
PYTEST_ARGS ?=
LINT_PATHS  := $(wildcard fragmented_keys_django tests example benchmarks)

# Pass REDIS_URL through to the demo/tests when it is set (env or command line).
ifdef REDIS_URL
export REDIS_URL
endif

.PHONY: help demo test lint docs bench bench-asgi bench-sentinel

help:
	@echo "make demo   - run the example project's demo (SQLite + database cache; REDIS_URL=... for Redis)"
	@echo "make test   - run the test suite (its own throwaway Redis; starts PostgreSQL if needed)"
	@echo "make lint   - ruff check + ruff format --check"
	@echo "make docs   - build the docs into site/ (mkdocs --strict)"
	@echo "make bench  - run benchmarks/run.py"
	@echo "make bench-asgi - the ASGI load benchmark (uvicorn + wrk or an asyncio client)"
	@echo "make bench-sentinel - what Sentinel's failover epoch costs (and what WAIT would)"

# --- virtualenv -------------------------------------------------------------
# bin/pip is the sentinel: Debian's python3 -m venv without ensurepip leaves a
# half-made venv with bin/python but no pip.
$(PIP):
	@python3 -m venv $(VENV) || { \
	  echo "error: could not create $(VENV): the venv module is missing."; \
	  echo "       install it with: apt-get install -y python3-venv"; \
	  exit 1; }

# Re-install only when pyproject.toml is newer than the stamp.
$(VENV)/.stamp-demo: pyproject.toml | $(PIP)
	$(PIP) install -q -e '.[redis,prometheus]'
	@touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(PIP)
	$(PIP) install -q -e '.[dev,redis,postgres]'
	@touch $@

# --- targets ----------------------------------------------------------------
demo: $(VENV)/.stamp-demo
	$(PY) example/manage.py demo

# pytest exit 5 ("no tests collected") is non-zero, so it fails the target too.
test: $(VENV)/.stamp-dev
	scripts/services.sh ensure
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests (exit 5)"; \
	elif [ $$rc -ne 0 ]; then echo "pytest failed (exit $$rc)"; fi; \
	exit $$rc

lint: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

docs: $(VENV)/.stamp-dev
	$(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(VENV)/.stamp-dev
	$(PY) benchmarks/run.py

# uvicorn from the bench extra; wrk is used when installed (apt-get install wrk).
bench-sentinel: $(VENV)/.stamp-dev
	$(PY) benchmarks/sentinel.py

bench-asgi: $(VENV)/.stamp-dev
	$(PIP) install -q -e '.[bench]'
	$(PY) benchmarks/asgi_load.py
