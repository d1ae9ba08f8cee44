# Two commands a user types on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
# The tests' own TensorFlow processes log warnings and above; `vtcaps` commands keep TensorFlow's
# start-up lines off stderr themselves (`vtcaps --verbose` shows them).
TEST_ENV := TF_CPP_MIN_LOG_LEVEL=$(or $(TF_CPP_MIN_LOG_LEVEL),2)

.PHONY: demo test test-all install bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q

test-all: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -m "slow or not slow" --durations=10

demo: $(STAMP)
	$(VENV)/bin/vtcaps demo $(DEMO_ARGS)

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf demo_out runs .pytest_cache
