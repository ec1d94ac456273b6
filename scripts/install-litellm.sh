#!/usr/bin/env bash
# Install LiteLLM's proxy, pinned, into its own venv in a cache folder outside the clone
# (${CCM_CACHE:-$HOME/.cache/ccm}/litellm-venv): the LiteLLM-as-an-upstream tests (tests/e2e/test_e2e_litellm.py) and
# `make bench` both run it from there. Idempotent: does nothing when the pinned version is already installed. A failed
# install is reported and exits 0, so the rest of `make test` runs; the tests that need LiteLLM then fail, saying so.
set -uo pipefail

VERSION="${LITELLM_VERSION:-1.100.5}"
VENV="${CCM_CACHE:-$HOME/.cache/ccm}/litellm-venv"
PYTHON="${PYTHON:-python3}"

installed() {
    [ -x "$VENV/bin/litellm" ] &&
        [ "$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('litellm'))" 2>/dev/null)" = "$VERSION" ]
}

installed && exit 0
echo "installing LiteLLM's proxy $VERSION (pip, its own venv in $VENV; a few minutes)" >&2
mkdir -p "$(dirname "$VENV")"
{ [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"; } &&
    "$VENV/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$VERSION" 2>&1 | grep -v "^WARNING: Location"
installed || echo "could not install LiteLLM $VERSION into $VENV" >&2
exit 0
