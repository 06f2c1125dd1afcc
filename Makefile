# Everything installs itself: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
JS_TEST_STAMP := tests/js/node_modules/.installed

DEMO_LISTEN ?= tcp:8080:interface=127.0.0.1
DEMO_REP    ?= tcp://127.0.0.1:9999
DEMO_PUB    ?= tcp://127.0.0.1:9000

.PHONY: all install demo test test-python test-js browser-deps bench clean

all: install

$(PY_STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(PY_STAMP)

$(JS_TEST_STAMP): tests/js/package.json
	cd tests/js && npm install --no-audit --no-fund --loglevel=error
	touch $@

# Runs the bridge with the two example services, allowing exactly their endpoints.
demo: $(PY_STAMP)
	$(BIN)/python scripts/demo.py --listen '$(DEMO_LISTEN)' --rep '$(DEMO_REP)' --pub '$(DEMO_PUB)'

test: test-python test-js

test-python: $(PY_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-js: $(PY_STAMP) $(JS_TEST_STAMP)
	cd tests/js && PATH="$(CURDIR)/$(BIN):$$PATH" node --test --test-concurrency=1 --test-reporter=spec

clean:
	rm -rf $(VENV) tests/js/node_modules *.egg-info build dist
