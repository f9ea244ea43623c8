#!/usr/bin/env bash
# The whole GPU run in one script: on a fresh Linux x86-64 machine with an NVIDIA GPU, from a copy
# of this repository, it creates .venv with CUDA JAX and everything the chapters import, checks
# that JAX sees the GPU, fetches the data, and runs every chapter that has a `paper` grid with
# papermill. Nothing here is hard-coded that the project already says elsewhere:
#   * packages: pyproject.toml's dependencies (jax as jax[cuda12]) and its `book` extra (papermill,
#     jupytext, the kernel, sympy, ...), pinned by requirements.lock;
#   * Python: the interpreter in $PYTHON (default python3), whatever its version (>= 3.11);
#   * chapters: those importing an experiment with a `paper` grid (scripts/book_toc.py --paper).
#
#   scripts/gpu_recipe.sh                     # online: install, check the GPU, fetch data, run
#   scripts/gpu_recipe.sh --dry-run           # print every step, run nothing (CI runs this;
#                                             # it combines with the options below)
#   scripts/gpu_recipe.sh --download DIR      # on a machine with internet: wheels for an offline
#                                             # GPU machine (PYVER=3.12 for another Python there)
#   scripts/gpu_recipe.sh --wheels DIR        # on the offline GPU machine: install from DIR
#   RUN_ARGS="-p seeds 3" scripts/gpu_recipe.sh   # extra run_chapter.py arguments for every chapter
#
# Each run resumes from the results store, so the script can simply be started again after an
# interruption. Bring back data/results/paper/ (and build/runs/, figures/ if wanted); then
# `IGR_PROFILE=paper make book` renders the paper-scale chapters anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
MODE=run DIR= DRY=0
while (($#)); do
  case "$1" in
    --dry-run) DRY=1 ;;
    --download) MODE=download DIR=${2:?--download needs a folder}; shift ;;
    --wheels) DIR=${2:?--wheels needs a folder}; shift ;;
    -h|--help) usage 0 ;;
    *) echo "gpu_recipe.sh: unknown argument $1" >&2; usage 2 >&2 ;;
  esac
  shift
done

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PYVER=${PYVER:-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
"$PYTHON" -c 'import sys, tomllib; need = tomllib.load(open("pyproject.toml", "rb"))["project"]["requires-python"]; assert sys.version_info >= (3, 11), need' \
  || { echo "gpu_recipe.sh: $PYTHON is Python $PYVER; the project needs >= 3.11 (set PYTHON=...)" >&2; exit 2; }

REQ=build/gpu/requirements-gpu.txt
mkdir -p "$(dirname "$REQ")"
# The chapters' runtime, from pyproject.toml: every dependency (JAX with its CUDA 12 plugin) and
# the `book` extra; setuptools builds the editable igrlib install.
"$PYTHON" - >"$REQ" <<'PYEOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["book"]:
    req = req.split("#")[0].strip()
    print(req.replace("jax==", "jax[cuda12]==", 1) if req.startswith("jax==") else req)
print("setuptools>=68")
PYEOF

step() {  # print a step; run it unless this is a dry run
  printf '+'; printf ' %q' "$@"; echo
  ((DRY)) || "$@"
}

if [[ $MODE == download ]]; then
  PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
             --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  step mkdir -p "$DIR"
  step cp "$REQ" "$DIR/requirements-gpu.txt"
  step "$PYTHON" -m pip download -d "$DIR" --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${PLATFORMS[@]}" -c requirements.lock -r "$REQ" --disable-pip-version-check
  ((DRY)) || echo "$(ls "$DIR"/*.whl | wc -l) wheels for Python $PYVER in $DIR."
  echo "Copy the repository with $DIR"
  echo "and data/ to the GPU machine and run there: scripts/gpu_recipe.sh --wheels $DIR"
  exit 0
fi

echo "Python $PYVER ($PYTHON); $(grep -c . "$REQ") requirements from pyproject.toml in $REQ"
OFFLINE=()
[[ -z $DIR ]] || OFFLINE=(--no-index --find-links "$DIR")
[[ -x $VENV/bin/python ]] || step "$PYTHON" -m venv "$VENV"
step "$VENV/bin/python" -m pip install --disable-pip-version-check "${OFFLINE[@]}" -c requirements.lock -r "$REQ"
step "$VENV/bin/python" -m pip install --disable-pip-version-check "${OFFLINE[@]}" --no-deps --no-build-isolation -e .
step "$VENV/bin/python" -c 'import jax; print(jax.devices()); assert jax.default_backend() == "gpu", "JAX sees no GPU: check the NVIDIA driver (nvidia-smi)"'
step "$VENV/bin/python" -m igrlib.io.data fetch

# In a dry run the chapters are listed (and their parameters checked) with the venv at hand.
PY=$VENV/bin/python
mapfile -t CHAPTERS < <("$PY" scripts/book_toc.py --paper)
echo "chapters with a paper grid: ${CHAPTERS[*]}"
read -r -a EXTRA <<<"${RUN_ARGS:-}"
for chapter in "${CHAPTERS[@]}"; do
  if ((DRY)); then
    printf '+'; printf ' %q' "$PY" scripts/run_chapter.py "$chapter" --profile paper "${EXTRA[@]}"; echo
    "$PY" scripts/run_chapter.py "$chapter" --profile paper "${EXTRA[@]}" --dry-run
  else
    step "$PY" scripts/run_chapter.py "$chapter" --profile paper "${EXTRA[@]}"
  fi
done
((!DRY)) || { echo "Dry run: nothing was installed or run."; exit 0; }
echo "Done. Bring back data/results/paper/ (and build/runs/, figures/); then IGR_PROFILE=paper make book."
