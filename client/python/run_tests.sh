#!/usr/bin/env bash
# Runs the Python client's tests against a real glassboxd, in a virtualenv of their own:
# creates the venv if needed, installs this package (which generates the gRPC modules from
# ../../proto) with pytest, and runs pytest. The exit code is pytest's.
#
#   GLASSBOX_SERVER_BIN  the glassboxd binary the tests start (unset: build/server/service/glassboxd
#                        in the repository or /work/build/server/service/glassboxd; none found:
#                        the server tests are skipped, loudly; set but missing: they fail)
#   GLASSBOX_VENV        the virtualenv (default: client/python/.venv); reused when it exists
#   GLASSBOX_PYTHON      the interpreter that creates it (default: python3, >= 3.9)
# Extra arguments go to pytest, e.g. `bash client/python/run_tests.sh -k stream -v`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${GLASSBOX_VENV:-$here/.venv}"
python="${GLASSBOX_PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "== python client: creating a virtualenv in $venv"
  if ! "$python" -m venv "$venv"; then
    echo "run_tests.sh: '$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 2
  fi
fi
py="$venv/bin/python"

echo "== python client: installing glassbox and pytest into $venv"
# pip >= 21.3 builds a local directory in place, so the build finds ../../proto.
"$py" -m pip install --quiet --disable-pip-version-check "pip>=21.3"
# A local path is always rebuilt and reinstalled, so a changed proto is picked up.
"$py" -m pip install --quiet --disable-pip-version-check "$here[test]"

echo "== python client: pytest (server: ${GLASSBOX_SERVER_BIN:-default location})"
cd "$here"
set +e
"$py" -m pytest -rs "$@"
exit $?
