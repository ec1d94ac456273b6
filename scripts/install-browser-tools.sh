#!/usr/bin/env bash
# What the admin page's browser tests need (tests/web/browser): Debian's chromium, driven by Playwright for Python
# with executable_path=/usr/bin/chromium (`playwright install` downloads a browser build, which fails here), and
# axe-core from npm, injected into each page for the accessibility check, cached outside the clone in
# ${CCM_CACHE:-$HOME/.cache/ccm}. Idempotent: does nothing when both are there.
set -euo pipefail

AXE_VERSION="${AXE_CORE_VERSION:-4.14.1}"
AXE_DEST="${CCM_CACHE:-$HOME/.cache/ccm}/axe-core-${AXE_VERSION}"
AXE_JS="$AXE_DEST/node_modules/axe-core/axe.min.js"

if ! /usr/bin/chromium --version >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq chromium >/dev/null
    else
        echo "the browser tests need Debian's chromium: sudo apt-get install -y chromium" >&2
        exit 1
    fi
    /usr/bin/chromium --version
fi

if [ ! -f "$AXE_JS" ]; then
    command -v npm >/dev/null || { echo "npm is required to install axe-core (apt-get install npm)" >&2; exit 1; }
    mkdir -p "$AXE_DEST"
    npm install --prefix "$AXE_DEST" --no-audit --no-fund --no-save --loglevel=error "axe-core@${AXE_VERSION}"
    test -f "$AXE_JS"
fi
