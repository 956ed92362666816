#!/usr/bin/env bash
# Wheels for the GPU machine of the `device` tool (Python 3.12, x86-64, no package index there): the
# packages `iqa score` needs that its image lacks, at the versions installed in this environment.
#   scripts/gpu_wheels.sh            # writes .whl/ (git-ignored through .git/info/exclude)
# Then, in one device run with carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 scripts/bench_gpu.py 2>&1 | tee $OUT/gpu.log
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PACKAGES="dask distributed partd locket tblib zict tornado toolz pydantic pydantic_core annotated-types
typing-inspection lpips importlib_metadata zipp"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pins=$("$PYTHON" - $PACKAGES <<'EOF'
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
EOF
)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins
du -sh .whl
