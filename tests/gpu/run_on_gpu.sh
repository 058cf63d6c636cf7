#!/usr/bin/env bash
# The GPU checks, for a machine with CUDA but without this project installed: puts wheels
# from .whl/ (pyzmq, structlog, ...) and this checkout on PYTHONPATH, runs the CUDA tests and
# the GPU-relevant server tests, then a short policy comparison on the GPU.
# Usage: bash tests/gpu/run_on_gpu.sh OUT_DIR
set -u
out=${1:-/tmp/gpu-check}
mkdir -p "$out" /tmp/pkg
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
ln -sfn "$PWD" /tmp/pkg/fastserve
export PYTHONPATH=/tmp/site:/tmp/pkg:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout 300 python3 -m pytest -q -p no:cacheprovider -ra --durations=8 tests/gpu \
  tests/unit/test_kv_swapper.py tests/unit/test_model_runner.py tests/unit/test_cuda_graphs.py \
  tests/process/test_inprocess_server.py tests/process/test_server_processes.py \
  tests/process/test_zmq_client_process.py 2>&1 | tee "$out/gpu_tests.log"
# A SmolLM2-135M-shaped random model on the GPU under a heavy-tailed Poisson load.
python3 - <<'PY'
from tests.model_fixtures import make_tiny_llama_dir
make_tiny_llama_dir("/tmp/smol-shaped", hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    head_dim=64, max_position_embeddings=4096)
PY
timeout 240 python3 -m fastserve.deploy.cli bench --compare-policies fcfs,skip-join-mlfq \
  --model /tmp/smol-shaped --device cuda --no-sim --no-progress --arrivals poisson \
  --rates "${GPU_BENCH_RATE:-12}" --num-requests 120 --prompt-lengths lognormal \
  --mean-prompt 64 --lengths lognormal --mean-output 60 --cv 2 --max-output 600 \
  --token-range 3:250 --num-device-blocks 256 --num-host-blocks 4096 --block-size 16 \
  --max-batch-jobs 16 --out "$out/gpu_bench.json" 2>&1 | tail -40 | tee "$out/gpu_bench.log"
