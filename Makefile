# The two commands the README opens with: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Most tests wait on sockets and bot processes, not the CPU: five workers on two cores
# halve the wall time.
TEST_WORKERS ?= 5

.PHONY: demo test test-compat lint format lock bench bench-full soak clean

DEMO_STAMP := $(VENV)/.demo

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The tests use the demo's embedded broker too, so they install both extras.
$(STAMP): pyproject.toml $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $(STAMP) $(DEMO_STAMP)

# `make demo` installs only what the demo needs: troupe and the demo extra (amqtt).
$(DEMO_STAMP): pyproject.toml $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/troupe-dev demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# The compatibility suite (pytest -m compat: the three modes, the seed plugin, each driver,
# `troupe check`) in its own venv, .venv-X.Y, under another Python: Python 3.13 found on PATH
# or in pyenv by default, or the one given as `make test-compat PYTHON=python3.12`.
ifeq ($(origin PYTHON),command line)
COMPAT_PYTHON ?= $(PYTHON)
else
COMPAT_PYTHON ?= $(shell .ci/find-python 3.13)
endif

test-compat:
	@py='$(COMPAT_PYTHON)'; [ -n "$$py" ] || exit 1; \
	venv=.venv-$$("$$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || exit 1; \
	if [ ! -f "$$venv/.installed" ] || [ pyproject.toml -nt "$$venv/.installed" ]; then \
		echo "building $$venv with $$py"; \
		"$$py" -m venv "$$venv" && "$$venv/bin/pip" install --quiet --upgrade pip && \
		"$$venv/bin/pip" install --quiet -e '.[test,demo]' && touch "$$venv/.installed" || exit 1; \
	fi; \
	"$$venv/bin/python" -m pytest -q -m compat

# requirements.lock: the runtime dependencies, pinned with hashes, that deploy/install.sh and
# deploy/Dockerfile install. Resolved on the oldest supported Python (3.11); see docs/install.md.
LOCK_PYTHON ?= $(shell .ci/find-python 3.11)

lock:
	@py='$(LOCK_PYTHON)'; [ -n "$$py" ] || exit 1; \
	[ -x .venv-lock/bin/pip-compile ] || { "$$py" -m venv .venv-lock && \
		.venv-lock/bin/pip install --quiet 'pip-tools>=7.4,<8'; } || exit 1; \
	.venv-lock/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

BENCH_STAMP := $(VENV)/.bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# A quick benchmark (under 3 minutes) and the whole grid; reports land in bench/reports/.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

bench-full: $(BENCH_STAMP)
	$(BIN)/python -m bench --full

# The soak: 10,000 commands per mode, 8 bots, every fault, time compressed (about 90
# minutes on 2 CPUs; not part of `make test`). Size it with e.g.
# SOAK_ARGS="--commands 300 --tag soak-short"; add --resume after an interruption.
SOAK_ARGS ?=
soak: $(BENCH_STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .venv-* build *.egg-info
