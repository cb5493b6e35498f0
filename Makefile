# ganexp: `make install` once, then `make train` / `make test`.
PY := .venv/bin/python
UV := $(shell command -v uv 2>/dev/null || echo "$(PY) -m uv")

.PHONY: help install train smoke test lint format bench

help:  ## this list
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
	uv sync --frozen --compile-bytecode
	@touch $@

install: .venv/.installed  ## create .venv with the locked dependencies (uv)

train: install  ## the default experiment: DCGAN on Fashion-MNIST (ARGS="norm=layer loss=wgan_gp")
	.venv/bin/ganexp $(ARGS)

smoke: install  ## a few steps of every hook, as CI runs it
	.venv/bin/ganexp experiment=smoke $(ARGS)

test: install  ## the test suite (CPU, offline)
	.venv/bin/pytest $(ARGS)

lint: install  ## ruff check + format check
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install  ## ruff fix + format
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

bench: install  ## performance figures vs the PyTorch DCGAN tutorial (ARGS=--quick: 1-2 min)
	.venv/bin/python bench/bench.py $(ARGS)
