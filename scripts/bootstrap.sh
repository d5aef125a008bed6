#!/usr/bin/env bash
# Set up .venv with everything the project, its tests and benchmarks need.
# torch comes first and pinned: an unpinned torch lets pip pull a multi-GB CUDA build.
# Every other package is pinned by constraints.txt, so installs are repeatable.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev,serve,bench,baselines,onnx,ray,capture,watch]"
echo "ready: .venv ($(.venv/bin/python -c 'import latent_sculpting as ls; print("latent-sculpting", ls.__version__)'))"
