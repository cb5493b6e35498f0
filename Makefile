# ganexp: `make train` / `make test` on a machine with Python 3.11 and make. What they need from
# the machine (uv; Debian's dataset-fashion-mnist) comes from scripts/setup.sh, which installs it
# (as root, or with passwordless sudo) or says what to run and stops.

.PHONY: help install train smoke test test-all lint format bench reproduce

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml uv.lock
	@uv=$$(scripts/setup.sh uv) && echo "$$uv sync --frozen --compile-bytecode" && \
	  "$$uv" sync --frozen --compile-bytecode
	@touch $@

# the tests run on one pytest-xdist worker per core; a test file's tests share one worker, so the
# runs a module trains once (module-scoped fixtures) are trained once. PARALLEL= runs them in turn.
PARALLEL ?= -n auto --dist loadfile

install: .venv/.installed  ## create .venv with the locked dependencies (uv)

train: install  ## the default experiment: DCGAN on Fashion-MNIST (ARGS="norm=layer loss=wgan_gp")
	@scripts/setup.sh run $(ARGS)
	.venv/bin/ganexp $(ARGS)

smoke: install  ## a few steps of every hook, as CI runs it
	@scripts/setup.sh run experiment=smoke $(ARGS)
	.venv/bin/ganexp experiment=smoke $(ARGS)

test: install  ## the fast tier: every part of ganexp, tests not marked slow (a few minutes)
	@scripts/setup.sh tests
	.venv/bin/pytest $(PARALLEL) -m "not slow" $(ARGS)

test-all: install  ## the whole test suite, slow tests too (what CI runs)
	@scripts/setup.sh tests
	.venv/bin/pytest $(PARALLEL) $(ARGS)

lint: install  ## ruff check + format check
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install  ## ruff fix + format
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

bench: install  ## performance figures vs the PyTorch DCGAN tutorial (ARGS=--quick: 1-2 min)
	@scripts/setup.sh run
	.venv/bin/python bench/bench.py $(ARGS)

reproduce: install  ## rerun the README's reproduced studies (ARGS="pacgan_ring_short ..."; hours)
	@scripts/setup.sh run
	scripts/reproduce.sh $(ARGS)
