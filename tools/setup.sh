#!/usr/bin/env bash
# One-time environment set-up, idempotent: creates .venv and installs videolang into it.
#
# - Reuses a torch that is already importable (a user's own CUDA build) via --system-site-packages.
# - Otherwise installs torch==2.13.0, which on CPU-only machines resolves to a local CPU wheel,
#   before anything else can drag in the multi-GB CUDA build as a transitive dependency.
# - DeepSpeed ships as an sdist that imports torch at build time; --no-build-isolation makes it
#   build against the torch above instead of downloading another one into an isolated build env.
# - ninja: DeepSpeed JIT-compiles its ops (on CPU, the shared-memory comm op) through torch's cpp_extension.
# - videolang itself is pure Python (pyproject.toml only): nothing of ours is compiled.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.videolang-installed"
if [[ -f "$stamp" && "$stamp" -nt pyproject.toml && "$stamp" -nt tools/setup.sh ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv --system-site-packages "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU build where no CUDA torch is present)"
  "${pip[@]}" "torch==2.13.0"
else
  echo "setup: reusing installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
fi
"${pip[@]}" "setuptools>=68" wheel ninja
"${pip[@]}" --no-build-isolation "deepspeed>=0.14"
"${pip[@]}" --no-build-isolation -e ".[test]"
touch "$stamp"
echo "setup: done ($VENV)"
