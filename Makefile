# Everything installs itself: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
JS_TEST_STAMP := tests/js/node_modules/.installed
JS_CLIENT_STAMP := js-client/node_modules/.installed

DEMO_LISTEN ?= tcp:8080:interface=127.0.0.1
DEMO_REP    ?= tcp://127.0.0.1:9999
DEMO_PUB    ?= tcp://127.0.0.1:9000

.PHONY: all install demo test test-python test-unit test-unit-lowest test-e2e test-js test-client test-deploy js-bundle lint lint-python lint-js browser-deps bench soak clean

all: install

$(PY_STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $@

install: $(PY_STAMP)

$(JS_TEST_STAMP): tests/js/package.json
	cd tests/js && npm install --no-audit --no-fund --loglevel=error
	touch $@

$(JS_CLIENT_STAMP): js-client/package.json js-client/package-lock.json
	cd js-client && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Runs the bridge with the two example services, allowing exactly their endpoints.
demo: $(PY_STAMP)
	$(BIN)/python scripts/demo.py --listen '$(DEMO_LISTEN)' --rep '$(DEMO_REP)' --pub '$(DEMO_PUB)'

test: test-python test-js test-client test-deploy

# The Python tests: tests/unit (in memory: no process, socket or zmq; seconds; with examples/test_custom_bridge.py,
# the example of testing a Bridge subclass with zmqwamp.testing), then tests/e2e (a real twistd
# bridge, pyzmq services, Python and Node clients; minutes). tests/deploy is test-deploy's. Timing bounds
# (waiting.timing_bound) missed here are warnings in pytest's summary; only `make soak` enforces them.
test-python: test-unit test-e2e

test-unit: $(PY_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit examples

test-e2e: $(PY_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e

# tests/unit once more, on the lowest version of each dependency pyproject.toml allows, in a venv of its own
# (.venv-lowest): tests/lowest-versions.txt pins them as pip constraints (a unit test keeps it equal to
# pyproject.toml's lower bounds).  CI runs it after `make test` (.ci/run); about a minute on a fresh machine.
LOWEST_VENV  := .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.installed

$(LOWEST_STAMP): pyproject.toml setup.py tests/lowest-versions.txt
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install -q --upgrade pip
	$(LOWEST_VENV)/bin/pip install -q -c tests/lowest-versions.txt -e '.[test]'
	touch $@

test-unit-lowest: $(LOWEST_STAMP)
	$(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit examples

# The deployment, run for real (tests/deploy): two bridges behind the shipped haproxy.cfg and nginx.conf with
# js-client clients (failover, rolling restart, addresses), the packages as users get them (the wheel in a
# fresh venv, npm pack into a fresh project), the Docker image's files and the systemd unit, and the Grafana
# dashboard and Prometheus rules against a real Prometheus scraping bridges under load. Installs Debian's
# haproxy, nginx and prometheus when missing and run as root (scripts/ensure-proxies.sh,
# scripts/ensure-prometheus.sh); otherwise those tests skip and say why.
test-deploy: $(PY_STAMP) $(JS_CLIENT_STAMP)
	scripts/ensure-proxies.sh
	scripts/ensure-prometheus.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/deploy

test-js: $(PY_STAMP) $(JS_TEST_STAMP)
	cd tests/js && PATH="$(CURDIR)/$(BIN):$$PATH" node --experimental-websocket --test --test-concurrency=1 --test-reporter=spec

# js-client: build with esbuild, then its Node tests and the real-browser test of the demo page
# (scripts/ensure-chromium.sh apt-installs Debian's chromium when missing and run as root).
test-client: $(PY_STAMP) $(JS_CLIENT_STAMP)
	scripts/ensure-chromium.sh
	cd js-client && node build.mjs && PATH="$(CURDIR)/$(BIN):$$PATH" node --test --test-concurrency=1 --test-reporter=spec test/*.test.mjs

# Rebuilds the browser bundle the bridge serves (zmqwamp/static/js/zmqwamp.js): commit the result.
# test-client fails while the committed copy differs from a fresh build.
js-bundle: $(JS_CLIENT_STAMP)
	cd js-client && node build.mjs --static

# The gate that keeps the code easy to change (.ci/run runs it before the tests): ruff (pyflakes, pycodestyle,
# isort, bugbear, pyupgrade) on all Python, the package formatted (ruff format), mypy on the package (mypy-zope
# for Twisted's interfaces), and js-client's own gate.  Versions pinned in pyproject.toml's 'lint' extra.
lint: lint-python lint-js

lint-python: $(PY_STAMP)
	$(BIN)/ruff check zmqwamp twisted tests bench scripts examples
	$(BIN)/ruff format --check zmqwamp twisted
	$(BIN)/mypy

# js-client's lint gate: ESLint (flat config), Prettier, and tsc: src/'s JSDoc types under strict, src/
# implements zmqwamp.d.ts, test/types/usage.ts and the README's examples compile against it.
lint-js: $(JS_CLIENT_STAMP)
	cd js-client && npm run --silent lint && npm run --silent format:check && npm run --silent typecheck

# Performance bench (issue 7; not part of `make test`): zmqwamp vs Crossbar + forwarder vs the
# WebSocket layer's limit vs raw zmq. Installs Crossbar into bench/.crossbar-venv on first use.
# Table on stdout, JSON in bench/results/latest.json. `make bench BENCH_ARGS='--quick'` for a
# smoke run, `BENCH_ARGS='--profile'` to add a profile of the bridge's hot path. See bench/README.md.
BENCH_ARGS ?=
bench: $(PY_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Reliability soak (issue 8; not part of `make test`): the reliability tests with long settings:
# 10,000 churned sessions twice, 5,000 fuzz examples per fuzz test, 5 minutes of stalled subscribers;
# and every timing bound enforced (ZMQWAMP_STRICT_TIMING=1: tests/waiting.py), with the other tests
# that have one (flood, login delays, revocation, slow names). `make test` runs the same tests short,
# checking that everything is delivered and nothing lost; a missed bound is a warning there. See docs/reliability.md.
SOAK_SESSIONS ?= 10000
SOAK_FUZZ     ?= 5000
SOAK_SECONDS  ?= 300
soak: $(PY_STAMP)
	ZMQWAMP_STRICT_TIMING=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_tokenbucket.py tests/unit/transport/test_guard.py tests/unit/upstream/test_budget.py tests/unit/wamp/test_session.py tests/unit/transport/test_outgoing.py
	ZMQWAMP_STRICT_TIMING=1 \
	ZMQWAMP_CHURN_SESSIONS=$(SOAK_SESSIONS) ZMQWAMP_FUZZ_EXAMPLES=$(SOAK_FUZZ) ZMQWAMP_SLOW_SECONDS=$(SOAK_SECONDS) \
	  $(BIN)/python -m pytest -q -s -p no:cacheprovider -o timeout=7200 \
	  tests/e2e/test_reliability_slow.py tests/e2e/test_reliability_load.py tests/e2e/test_fuzz.py \
	  tests/e2e/test_reliability_backends.py tests/e2e/test_limits.py \
	  tests/e2e/test_batching.py tests/e2e/test_auth.py tests/e2e/test_revocation.py tests/e2e/test_hostile_upstream.py

clean:
	rm -rf $(VENV) $(LOWEST_VENV) tests/js/node_modules js-client/node_modules js-client/dist *.egg-info build dist
