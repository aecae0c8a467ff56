#!/usr/bin/env bash
# Refresh requirements/lock.txt: the newest releases pyproject.toml's ranges allow, every file hashed.
# Then run the suite on exactly that set before committing it:
#   bash scripts/lock.sh && rm -rf .venv && bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TOOLS=${TMPDIR:-/tmp}/unitune-lock-tools
[ -x "$TOOLS/bin/pip-compile" ] || { "$PYTHON" -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q pip-tools; }
# torch is installed on its own (requirements/torch.txt), so the lock leaves it out but keeps what it needs.
"$TOOLS/bin/pip-compile" -q --upgrade --generate-hashes --strip-extras \
    --unsafe-package torch --no-emit-index-url --no-emit-find-links \
    --extra dev --extra ui --extra scale --constraint requirements/torch.txt \
    --output-file requirements/lock.txt pyproject.toml
echo "requirements/lock.txt refreshed for Python $("$PYTHON" -c 'import sys; print(*sys.version_info[:2], sep=".")')"
