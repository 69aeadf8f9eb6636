# The two commands: `make demo` (set up, run the five DAGs on the sample warehouse against their sandboxes,
# print one report)
# and `make test` (set up, run the whole test suite). Everything lands in .venv/, data/ and .airflow/.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-postgres ui stack stack-down bench lint lock clean

venv: $(STAMP)

# --compile-bytecode: every Airflow task runs in a new Python process, and where no .pyc can be written at
# import (PYTHONDONTWRITEBYTECODE, a read-only venv) each one compiled ~4,000 modules again: importing
# airflow.sdk, Great Expectations and pandas took 11.7 s instead of 6.9 s on 2 cores.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip sync --quiet --compile-bytecode --python $(PY) requirements.txt
	@touch $(STAMP)

demo: venv
	$(PY) scripts/demo.py

# Two pytest calls: every test but the `serial` ones on TEST_WORKERS pytest-xdist workers (tests/ui as one
# group: they share one `make ui`), then the `serial` ones alone, where no other test's CPU can skew the
# pacing and lease timings they check. Both run even when the first fails.
TEST_WORKERS ?= 2
test: venv
	$(PY) -m ruff check .
	@status=0; \
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" || status=$$?; \
	$(PY) -m pytest -m serial || status=$$?; \
	exit $$status

ui: venv
	$(PY) scripts/ui.py

# CeleryExecutor with two workers, PostgreSQL, Redis and S3 staging on this machine (scripts/stack.py)
stack: venv
	$(PY) scripts/stack.py

stack-down: venv
	$(PY) scripts/stack.py --down

# benchmarks/run_all.py: bench_extract_validate, bench_ledger, bench_delivery, bench_connectif, bench_batches,
# bench_splio, bench_ui, bench_task_cost (each goes on when one fails), then benchmarks/summary.py's table.
bench: venv
	$(PY) benchmarks/run_all.py

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

lock:
	$(VENV)/bin/uv pip compile requirements.in --python-version 3.11 -o requirements.txt --no-header -q

clean:
	rm -rf .airflow data
