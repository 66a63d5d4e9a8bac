#!/usr/bin/env bash
# Set up whatever is missing (tests included), then run the whole test suite, slow tests too.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` or `-k tokenize`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --test
# shellcheck disable=SC1091
. .venv/bin/activate
exec python -m pytest "$@"
