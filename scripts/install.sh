#!/usr/bin/env bash
# Creates ./.venv (Python 3.11) with the pinned torch/torchvision of these machines and installs
# uncertain_repr in editable mode with its development extras. Safe to run again: it only
# installs what is missing.
# As root on a Debian/Ubuntu machine it ALSO installs a system package: dataset-fashion-mnist, with
# apt-get (Fashion-MNIST, MIT, for the evaluation tests). It says so first; INSTALL_APT=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check \
  "torch==2.14.1" "torchvision==0.29.1" -e ".[dev]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
# Fashion-MNIST (MIT) for the evaluation tests, from Debian's dataset-fashion-mnist package.
if [ "${INSTALL_APT:-1}" != 0 ] && [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null \
   && [ "$(id -u)" = 0 ]; then
  echo "installing the Debian package dataset-fashion-mnist system-wide with apt-get (running as root;" \
       "Fashion-MNIST for the tests; INSTALL_APT=0 skips this)"
  { apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; } \
    >/dev/null 2>&1 || echo "note: could not install dataset-fashion-mnist (Fashion-MNIST tests will skip locally)"
fi
.venv/bin/python -c "import uncertain_repr, torch; print('uncertain_repr', uncertain_repr.__version__, '| torch', torch.__version__)"
