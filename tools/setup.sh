#!/usr/bin/env bash
# One-time environment set-up, idempotent: creates .venv and installs videolang into it.
#
# - Reuses a torch that is already importable (a user's own CUDA build) via --system-site-packages.
# - Otherwise installs torch==2.13.0, which on CPU-only machines resolves to a local CPU wheel,
#   before anything else can drag in the multi-GB CUDA build as a transitive dependency.
# - Builds the optional C extension of the fused CPU Sinkhorn solver (setup.py) with the system C compiler.
# - DeepSpeed ships as an sdist that imports torch at build time; --no-build-isolation makes it
#   build against the torch above instead of downloading another one into an isolated build env.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.videolang-installed"
fresh=1
for f in pyproject.toml setup.py tools/setup.sh videolang/losses/_sinkhorn_kernel.c videolang/losses/_sinkhorn_iterate.h; do
  [[ -f "$stamp" && "$stamp" -nt "$f" ]] || fresh=0
done
[[ $fresh == 1 ]] && exit 0
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
# The C extension behind the fused CPU Sinkhorn solver is optional: say whether it was built.
"$VENV/bin/python" -c "from videolang.losses import fused_sinkhorn as f
print('setup: fused Sinkhorn solver', ', '.join(f.variants()) if f.available() else 'NOT built (no C compiler?): the slower torch loop runs')"
touch "$stamp"
echo "setup: done ($VENV)"
