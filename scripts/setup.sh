#!/usr/bin/env bash
# What `make` needs from the machine beyond Python 3.11 and make itself, in one place:
#
#   scripts/setup.sh uv              prints the path of a uv to run, installing one if there is none
#   scripts/setup.sh tests           installs Debian's dataset-fashion-mnist if it is not (the tests
#                                    read /usr/share/datasets/fashion-mnist)
#   scripts/setup.sh run [OVERRIDES] installs it when `ganexp OVERRIDES` trains on Fashion-MNIST
#                                    and finds no copy: data.root set, or files already present
#                                    (data.search, an earlier download), install nothing
#
# System packages are installed with apt-get as root, or through sudo when it needs no password.
# When neither works, the command to run is printed in one or two lines and the exit code is 1.
set -euo pipefail
cd "$(dirname "$0")/.."

FASHION=/usr/share/datasets/fashion-mnist
UV_DIR=.uv-bootstrap # uv's own wheel unpacked here when no uv is on PATH (self-ignored by git)
UV_DOCS=https://docs.astral.sh/uv/getting-started/installation/

say() { printf 'setup: %s\n' "$*" >&2; }

# Run apt-get as root: directly, or through sudo when it asks no password for it.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    sudo -n "$@"
  fi
}

# How this user would type a command as root, for the messages.
as_root_line() {
  if command -v sudo >/dev/null 2>&1; then
    echo "sudo $*"
  else
    echo "su -c '$*'"
  fi
}

# Whether this user can run apt-get as root without a password.
can_apt() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [ "$(id -u)" -eq 0 ] || sudo -n apt-get --version >/dev/null 2>&1
}

# apt-get install PACKAGES, updating the package lists first when the install alone fails (a
# fresh machine or container starts with none). sudo drops DEBIAN_FRONTEND; stdin is /dev/null,
# so a question (these packages ask none) cannot hang make.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  say "installing $* (apt-get install)"
  as_root apt-get install -y -qq "$@" </dev/null >/dev/null 2>&1 && return 0
  as_root apt-get update -qq </dev/null >/dev/null &&
    as_root apt-get install -y -qq "$@" </dev/null >/dev/null
}

# ---- uv -----------------------------------------------------------------------------------------

pip_target_uv() {
  # --target: a folder of its own, not the interpreter's packages, so PEP 668 (Debian's
  # "externally managed" python3) does not refuse it
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --target "$UV_DIR" uv >&2 &&
    printf '*\n' >"$UV_DIR/.gitignore"
}

setup_uv() {
  if command -v uv >/dev/null 2>&1; then
    command -v uv
    return
  fi
  if [ ! -x "$UV_DIR/bin/uv" ]; then
    say "no uv on PATH: installing it into $UV_DIR with pip"
    if ! python3 -m pip --version >/dev/null 2>&1; then
      if can_apt; then
        apt_install python3-pip
      elif command -v apt-get >/dev/null 2>&1; then
        say "no uv, and python3 has no pip to install it. Run: $(as_root_line apt-get install python3-pip)"
        say "then run make again (or install uv yourself: $UV_DOCS)"
        exit 1
      else
        say "no uv, and python3 has no pip to install it: install uv ($UV_DOCS), then run make again"
        exit 1
      fi
    fi
    rm -rf "$UV_DIR"
    pip_target_uv || {
      say "pip could not install uv (above): install uv ($UV_DOCS), then run make again"
      exit 1
    }
  fi
  echo "$PWD/$UV_DIR/bin/uv"
}

# ---- Fashion-MNIST ------------------------------------------------------------------------------

# Whether the ganexp command with overrides "$@" needs Debian's copy: some job trains on
# fashion_mnist, sets no data.root, and no copy is found (data.search, an earlier download in the
# cache). Prints yes or no. A command that does not compose says no: ganexp then reports the error.
needs_fashion() {
  .venv/bin/python - "$@" <<'EOF' 2>/dev/null || echo no
import dataclasses
import sys

from hydra import compose, initialize_config_module

from ganexp import preflight
from ganexp.config import register_schema, validate
from ganexp.errors import ConfigError


def needs(argv: list[str]) -> bool:
    flags, overrides = preflight.split_argv(argv)
    if preflight._NO_JOB_FLAGS & set(flags):
        return False
    multirun = bool({"-m", "--multirun"} & set(flags))
    register_schema()
    with initialize_config_module(preflight.CONFIG_MODULE, version_base="1.3"):
        params = preflight._sweeper_params(overrides) if multirun else {}
        for job in preflight.job_overrides(overrides, multirun, params):
            data = validate(compose("config", overrides=job)).data
            if data.name != "fashion_mnist" or data.root:
                continue
            from ganexp.data.mnist import locate

            try:
                locate(dataclasses.replace(data, download=False))
            except ConfigError:
                return True
    return False


print("yes" if needs(sys.argv[1:]) else "no")
EOF
}

# Install Debian's copy, or say what to run and exit 1. $1: the line printed after that.
install_fashion() {
  local line
  if ! command -v apt-get >/dev/null 2>&1; then
    line="there is no apt-get here: copy its four *-ubyte.gz files into $FASHION"
  elif can_apt; then
    apt_install dataset-fashion-mnist && return
    line="apt-get install dataset-fashion-mnist failed (above)"
  else
    line="only root can install it. Run: $(as_root_line apt-get install dataset-fashion-mnist)"
  fi
  say "Fashion-MNIST is not installed and $line"
  say "$1"
  exit 1
}

have_fashion() {
  [ -f "$FASHION/train-images-idx3-ubyte.gz" ] && [ -f "$FASHION/train-labels-idx1-ubyte.gz" ]
}

case "${1:-}" in
  uv) setup_uv ;;
  tests)
    have_fashion || install_fashion "then run make test again (the tests read $FASHION)"
    ;;
  run)
    shift
    if ! have_fashion && [ "$(needs_fashion "$@")" = yes ]; then
      install_fashion "then run make again; or use a copy of your own: ARGS=\"data.root=DIR\""
    fi
    ;;
  *)
    echo "usage: $0 uv | tests | run [GANEXP OVERRIDES]" >&2
    exit 2
    ;;
esac
