#!/usr/bin/env bash
# Create .venv and install unitune with its test, UI and Ray (scale) extras. Safe to run again.
# On Python 3.11 every package is the version CI last tested (requirements/lock.txt, hash-checked);
# other Pythons get the newest releases pyproject.toml's ranges allow.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOCKED_PYTHON=3.11  # the Python requirements/lock.txt was compiled for (scripts/lock.sh)
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q -r requirements/torch.txt
if [ "$(python -c 'import sys; print(*sys.version_info[:2], sep=".")')" = "$LOCKED_PYTHON" ]; then
    python -m pip install -q --require-hashes --no-deps -r requirements/lock.txt
    python -m pip install -q --no-deps --no-build-isolation -e .
    python -m pip check >/dev/null
else
    echo "setup: requirements/lock.txt is for Python $LOCKED_PYTHON; installing the newest allowed releases" >&2
    python -m pip install -q -e ".[dev,ui,scale]"
fi
# The web UI tests drive Debian's chromium through chromedriver (a browser is never downloaded).
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver; } \
        >/dev/null 2>&1 || echo "setup: could not install chromium + chromium-driver (browser tests: skipped; on CI: failed)" >&2
fi
