#!/usr/bin/env bash
# Build the overseer wheel from this source tree and install it, with its dependencies and
# nothing else of the tree, into a new virtual environment:
#
#   operator/install-wheel.sh DEST [PYTHON]      # PYTHON defaults to python3
#
# Both images (operator/Dockerfile, agent_image/Dockerfile) install this way, and CI runs the
# same script into a clean folder and starts both commands from it (e2e/test_install.py), so
# what the images hold is tested where no container engine runs.
#
# DEST holds no pip, setuptools or wheel (the image's last stage copies DEST and nothing of
# the build), and every module is compiled to bytecode here, so a read-only root filesystem
# never needs a __pycache__ write.
set -euo pipefail
DEST=${1:?usage: install-wheel.sh DEST [PYTHON]}
PYTHON=${2:-python3}
SRC=$(cd "$(dirname "$0")/.." && pwd)  # the repository root
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "install-wheel.sh: $PYTHON is older than 3.11" >&2; exit 1; }

# Built from a copy holding only what the distribution is made of: the build writes
# egg-info and build/ next to its sources, and must leave the tree (or a read-only mount) alone.
mkdir -p "$WORK/src"
cp -R "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/operator" "$SRC/agent_image" "$WORK/src/"
find "$WORK/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
wheel=$(ls "$WORK"/dist/overseer-*.whl)

# A venv without pip: the outer pip installs into it (--python), so no installer is left in DEST.
"$PYTHON" -m venv --without-pip "$DEST"
"$PYTHON" -m pip --python "$DEST/bin/python" install --quiet --no-compile "$wheel"
# One explicit compile of everything in DEST. unchecked-hash: an installed file never changes
# (an image's least of all), so imports neither stat nor hash the sources to trust the bytecode.
"$DEST/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$DEST" >/dev/null
echo "installed $(basename "$wheel") into $DEST"
