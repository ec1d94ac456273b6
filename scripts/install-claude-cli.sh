#!/usr/bin/env bash
# Install the pinned Claude Code CLI that the end-to-end tests drive, into a cache folder outside the clone
# (so `git clean` and fresh clones keep it). Idempotent: does nothing when the right version is already there.
set -euo pipefail

VERSION="${CLAUDE_CODE_VERSION:-2.1.328}"
DEST="${CCM_CACHE:-$HOME/.cache/ccm}/claude-code-${VERSION}"
BIN="$DEST/bin/claude"

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "^${VERSION}\b"; then
    exit 0
fi

command -v npm >/dev/null || { echo "npm is required to install the Claude Code CLI (apt-get install npm)" >&2; exit 1; }
mkdir -p "$DEST"
# --prefix puts the package under $DEST/lib/node_modules and its launcher at $DEST/bin/claude.
npm install --global --prefix "$DEST" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@${VERSION}"
"$BIN" --version
