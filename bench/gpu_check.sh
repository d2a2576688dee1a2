#!/usr/bin/env bash
# GPU check for the trainer, prepared for the H200 device machine (never run by CI).
#
# Trains, with our loop in bf16 on CUDA for a fixed number of steps, a model of
# SmolLM2-135M's exact shape and a generated TinyLlama-1.1B-shaped Llama, on synthetic chat
# data with log-normal lengths, and prints tokens/s, peak GPU memory and MFU against the
# H200's bf16 dense peak (and against a matmul peak measured in the same run).
# SmolLM2's real weights cannot travel (its GGUF is 98 MB, over the 64 MiB the device call
# carries); random weights of the same shape cost exactly the same compute.
#
# The device image has torch, transformers and peft but not structlog. Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl structlog==26.1.0
# then run on the device machine with carry [".whl"]:  bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# bench/train.py imports the installed package; here nothing is installed, so the checkout.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR="${WORKDIR:-/tmp/tunegate-gpu-check}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"

python3 bench/train.py gpu --model smollm2-shape --steps 30 --batch-size 64 \
  --micro-batch-tokens 32768 --learning-rate 2e-4 --workdir "$WORKDIR"
python3 bench/train.py gpu --model llama-1b --steps 20 --batch-size 64 \
  --micro-batch-tokens 32768 --learning-rate 2e-4 --workdir "$WORKDIR"

# --- inference (issue 15): the local backend on CUDA, then the vllm backend -------------
# The local backend's figures against plain generate() on the GPU (bf16, tiny model).
python3 bench/serve.py --skip-gateway --device cuda
# vLLM is the optional extra `tunegate[vllm]`: it brings its own CUDA torch, so it lives in
# a venv of its own (VLLM_VENV, made here when vllm wheels were carried in .whl/vllm/, e.g.
#   python3 -m pip download -d .whl/vllm 'vllm>=0.11' --python-version 3.12 ...
# though its wheels exceed what a device call carries; an image with vLLM works as it is).
VLLM_PY=""
if python3 -c "import vllm" 2>/dev/null; then
  VLLM_PY=python3
elif [ -x "${VLLM_VENV:-/tmp/vllm-venv}/bin/python" ]; then
  VLLM_PY="${VLLM_VENV:-/tmp/vllm-venv}/bin/python"
elif compgen -G ".whl/vllm/*.whl" > /dev/null; then
  python3 -m venv "${VLLM_VENV:-/tmp/vllm-venv}"
  "${VLLM_VENV:-/tmp/vllm-venv}/bin/pip" install -q --no-index --find-links .whl/vllm \
    --find-links .whl vllm structlog
  VLLM_PY="${VLLM_VENV:-/tmp/vllm-venv}/bin/python"
fi
if ! nvidia-smi > /dev/null 2>&1; then
  echo "vllm check skipped: no GPU"
elif [ -z "$VLLM_PY" ]; then
  echo "vllm check skipped: vllm is not installed here (no network on the device machine;" \
    "carry wheels in .whl/vllm/ or set VLLM_VENV)"
else
  "$VLLM_PY" bench/serve.py --vllm
fi
