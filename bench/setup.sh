#!/usr/bin/env bash
# What `make bench` compares, installed idempotently under ${CCM_CACHE:-$HOME/.cache/ccm}/bench (outside the clone):
#   nginx, wrk, valgrind     Debian packages (the upstream, the load generator, bench.instructions' counter)
#   ccr/                     claude-code-router 2.0.0 from npm
#   ../litellm-venv/         LiteLLM's proxy from PyPI, pinned, in its own venv (scripts/install-litellm.sh, which
#                            `make test` runs too: one install for the benchmark and the tests)
#   venv/                    matplotlib (the chart) and py-spy (the profile): not ccm's dependencies
# Each step runs only when its result is missing. A step that fails is reported and the others go on: the harness
# then reports that peer as unavailable, with the reason. Given bench.run's arguments (make bench passes ARGS), a
# peer that `--targets` leaves out is not installed. (The variants' trees are bench.run's: bench/variants.py.)
set -uo pipefail

targets="upstream,ccm,ccr,litellm"
while [ $# -gt 0 ]; do
    case "$1" in
        --targets) targets="${2:-}"; shift ;;
        --targets=*) targets="${1#--targets=}" ;;
    esac
    shift
done
wanted() { case ",$targets," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

CACHE="${CCM_CACHE:-$HOME/.cache/ccm}/bench"
PYTHON="${PYTHON:-python3}"
CCR_VERSION="2.0.0"
mkdir -p "$CACHE"

say() { echo "bench setup: $*" >&2; }
quiet_pip() { "$@" 2>&1 | grep -v "^WARNING: Location" ; return "${PIPESTATUS[0]}"; }

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v valgrind >/dev/null; then
    say "installing nginx, wrk and valgrind (apt-get)"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    { $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq nginx wrk valgrind >/dev/null; } ||
        say "could not install nginx/wrk/valgrind; the run falls back to the Python load generator and needs nginx"
fi

ccr_package="$CACHE/ccr/node_modules/@musistudio/claude-code-router/package.json"
if wanted ccr && [ "$(node -p "require('$ccr_package').version" 2>/dev/null)" != "$CCR_VERSION" ]; then
    say "installing claude-code-router $CCR_VERSION (npm)"
    npm install --prefix "$CACHE/ccr" --no-audit --no-fund --loglevel=error \
        "@musistudio/claude-code-router@$CCR_VERSION" >/dev/null || say "could not install claude-code-router"
fi

if wanted litellm; then
    bash "$(dirname "$0")/../scripts/install-litellm.sh"
fi

if [ ! -x "$CACHE/venv/bin/py-spy" ] || ! "$CACHE/venv/bin/python" -c "import matplotlib" 2>/dev/null; then
    say "installing matplotlib and py-spy (pip, the bench venv)"
    { "$PYTHON" -m venv "$CACHE/venv" &&
      quiet_pip "$CACHE/venv/bin/pip" install -q --disable-pip-version-check matplotlib py-spy; } ||
        say "could not install matplotlib/py-spy: no chart, no profile"
fi
exit 0
