#!/usr/bin/env bash
# Download into build/wheels/ every wheel a bare Linux x86-64 machine with an NVIDIA GPU needs to
# install igrlib and run chapters with papermill offline: JAX with its CUDA 12 plugin and NVIDIA
# libraries, Haiku, Optax, papermill, jupytext and the Jupyter kernel stack, at the versions of
# pyproject.toml and requirements.lock (`make wheels` runs this; it needs PyPI, a few GB).
#
#   scripts/prepare_gpu_wheels.sh            # wheels for this venv's Python version
#   PYVER=3.12 scripts/prepare_gpu_wheels.sh # for another Python on the GPU machine
#   DRY_RUN=1 scripts/prepare_gpu_wheels.sh  # only check that the set resolves
#
# Then copy the repository (with build/wheels and data/) to the GPU machine and run the install
# commands printed at the end (also in book/reproduce.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
PYVER=${PYVER:-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
DEST=${DEST:-build/wheels}
mkdir -p "$DEST"
REQ="$DEST/requirements-gpu.txt"

# The chapters' runtime: igrlib's dependencies with CUDA JAX, plus what papermill needs to
# convert and execute a chapter; setuptools builds the editable igrlib install there.
"$PY" - >"$REQ" <<'PYEOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
book = {r.split("==")[0]: r for r in project["optional-dependencies"]["book"]}
for req in project["dependencies"]:
    print(req.replace("jax==", "jax[cuda12]==", 1) if req.startswith("jax==") else req)
for name in ("papermill", "jupytext", "ipykernel"):
    print(book[name])
print("setuptools>=68")
PYEOF

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
COMMON=(--only-binary=:all: --python-version "$PYVER" --implementation cp "${PLATFORMS[@]}"
        -c requirements.lock -r "$REQ" --disable-pip-version-check)

if [[ -n "${DRY_RUN:-}" ]]; then
  report="$DEST/resolution.json"
  "$PY" -m pip install --dry-run --ignore-installed --target "$DEST/.dry-run" "${COMMON[@]}" \
    --quiet --report "$report"
  "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1]))["install"]; print(len(r), "wheels resolve:", " ".join(sorted(i["metadata"]["name"] + "==" + i["metadata"]["version"] for i in r)))' "$report"
  rm -rf "$DEST/.dry-run"
  exit 0
fi

"$PY" -m pip download -d "$DEST" "${COMMON[@]}"
echo
echo "$(ls "$DEST"/*.whl | wc -l) wheels ($(du -sh "$DEST" | cut -f1)) in $DEST for Python $PYVER. On the GPU machine:"
cat <<EOF2
  python$PYVER -m venv .venv
  .venv/bin/pip install --no-index --find-links $DEST -r $REQ
  .venv/bin/pip install --no-index --find-links $DEST --no-deps -e .
  .venv/bin/python -c "import jax; print(jax.devices())"      # expect CudaDevice(id=0)
  .venv/bin/python scripts/run_chapter.py mnist_igr --profile paper
EOF2
