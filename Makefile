# recsys: one task runner. `make demo` and `make test` do all setup on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PREFECT_HOME ?= $(CURDIR)/var/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
PORT ?= 4200
REPORTS_PORT ?= 4201

.PHONY: install demo test test-fast lint format server serve deploy bench bench-nightly-10m bench-sasrec clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the pinned CPU build; otherwise a dependency pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: install  ## synthetic landing data + the nightly pipeline, local Prefect (SQLite)
	$(VENV)/bin/recsys demo

# two pytest-xdist workers, one test file each at a time (a file's module fixtures are built once):
# much of the suite waits on servers and subprocesses, so two workers overlap even on 2 cores
TEST_WORKERS ?= 2
test: install  ## the whole suite (CI runs this); TEST_WORKERS=0 runs it in one process
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(PY) -m pytest -q -m "not slow and not model and not postgres and not prefect"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

server: install  ## a local Prefect server + UI on 127.0.0.1:$(PORT), SQLite
	$(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PORT)

# where `make serve` / `make deploy` point the deployments (default: the config / var/ defaults)
SERVE_ARGS = $(if $(CONFIG),--config $(CONFIG)) $(if $(LANDING),--landing $(LANDING)) $(if $(WAREHOUSE),--warehouse $(WAREHOUSE))
serve: install  ## serve the deployments against `make server` (LANDING=, WAREHOUSE=, CONFIG=, REPORTS_PORT=)
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PORT)/api} $(VENV)/bin/recsys serve $(SERVE_ARGS) --reports-port $(REPORTS_PORT)

POOL ?= recsys
deploy: install  ## register the deployments on a work pool (then: prefect worker start --pool $(POOL))
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PORT)/api} $(VENV)/bin/recsys deploy --pool $(POOL) $(SERVE_ARGS)

bench: install
	$(PY) benchmarks/bench_embeddings.py
	$(PY) benchmarks/bench_ml100k.py
	$(PY) benchmarks/bench_scoring.py --users 20000 --repeats 2
	$(PY) benchmarks/bench_ingest.py --events-millions 2
	$(PY) benchmarks/bench_storage.py
	nice -n 10 $(PY) benchmarks/bench_nightly.py --sizes 1   # cold + warm nights, direct and via Prefect

bench-nightly-10m: install  ## the nightly at 1M, 3M and 10M events (over an hour on 2 shared cores; peak RSS ~3 GiB)
	nice -n 10 $(PY) benchmarks/bench_nightly.py --sizes 1,3,10 --prefect-sizes '' --no-embed --tune-calls 4

bench-sasrec: install  ## the Transformer against tuned EASE (about 45 min on 2 CPU cores)
	$(PY) benchmarks/bench_sasrec.py

clean:
	rm -rf var/warehouse var/landing .pytest_cache
