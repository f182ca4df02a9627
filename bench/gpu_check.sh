#!/usr/bin/env bash
# The first run on a CUDA GPU, in one command (≈ 8 minutes on one H100/H200), everything under one folder:
#
#     bash bench/gpu_check.sh                      # → bench/results/gpu-check-<date>/
#     bash bench/gpu_check.sh /tmp/check           # another folder
#
#   1. pretrain.log   python scripts/pretrain.py, 100 steps of the default GPT-2 124M config (bf16, compiled) on
#                     data/shakespeare, tokenized here: tokens/s and MFU against the datasheet peak in its log
#   2. bench/         python bench/run.py --device cuda: training at T=1024 and CUDA-graph decode vs HF
#   3. generate.log   python scripts/generate.py --compile on the weights step 1 wrote
#   4. evaluate.json  python scripts/evaluate.py on the GPU: HellaSwag and LAMBADA from tests/fixtures/eval (the
#                     machine has no internet; the real sets are used when data/eval holds them), 200 examples each
#   5. pytest.log     python -m pytest -m cuda: the CUDA-only tests (tests/test_cuda.py)
#   6. reproduce.log  only with REPRO_STEPS=N (e.g. 300; ≈ 1 s a step on one H100 and ≈ 1 minute of compiling):
#                     N steps of configs/gpt2-124M-fineweb.yaml, the reproduction run itself (524,288 tokens a
#                     step), on a slice prepared here from data/shakespeare as sharded data (the machine cannot
#                     download FineWeb): tokens/s and MFU in its log
# summary.txt lists each step's exit code and seconds. Each step has its own time limit (480 s in all), and a
# failed step does not stop the others. Without a GPU it stops at once with one error line and exit code 2.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! command -v "$PY" > /dev/null; then
    echo "error: no '$PY' on PATH; activate the project's environment or set PYTHON=/path/to/python" >&2
    exit 2
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "error: $PY cannot import torch; activate the project's environment or set PYTHON=/path/to/python" >&2
    exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: bench/gpu_check.sh needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False);" \
         "run it on a GPU machine with a CUDA build of torch" >&2
    exit 2
fi
OUT=${1:-bench/results/gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
: > "$OUT/summary.txt"
"$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" > "$OUT/device.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, its output to NAME.log, its result to summary.txt
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "[$name] $*" | tee -a "$OUT/summary.txt"
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "[$name] exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

# 1. the main command, 100 steps (gradient accumulation as configured: 65,536 tokens a step)
step pretrain 120 "$PY" scripts/pretrain.py --out-dir "$OUT/pretrain" --data-dir "$OUT/data" --max-steps 100 \
    --eval-interval 50 --eval-iters 10 --ckpt-interval 100 --tensorboard false --wandb-mode disabled --progress false
# 2. the benchmark suite against Hugging Face
step bench 190 "$PY" bench/run.py --device cuda --repeats 3 --out "$OUT/bench/gpu.md"
# 3. generation through the CLI, CUDA-graph decode step
step generate 40 "$PY" scripts/generate.py --weights "$OUT/pretrain" --prompt "ROMEO:" --max-new-tokens 200 \
    --temperature 0 --compile --device cuda
# 4. evaluation on the GPU (the fixtures repeated to the real sets' sizes, unless the real ones are here)
EVAL_DATA=data/eval
if [ ! -f "$EVAL_DATA/hellaswag_val.jsonl" ]; then
    EVAL_DATA="$OUT/eval-data"
    "$PY" - "$EVAL_DATA" <<'PYEOF'
import sys
from pathlib import Path

sys.path.insert(0, ".")
from gpt.eval.data import SOURCES

root = Path(sys.argv[1])
root.mkdir(parents=True, exist_ok=True)
for task, fixture in (("hellaswag", "hellaswag_val_200.jsonl"), ("lambada", "lambada_openai_test_200.jsonl")):
    rows = (Path("tests/fixtures/eval") / fixture).read_text(encoding="utf-8").splitlines()
    lines = [rows[i % len(rows)] for i in range(SOURCES[task].size)]
    (root / SOURCES[task].filename).write_text("\n".join(lines) + "\n", encoding="utf-8")
PYEOF
fi
WEIGHTS=weights/gpt2-124M.safetensors
[ -f "$WEIGHTS" ] || WEIGHTS="$OUT/pretrain"
step evaluate 55 "$PY" scripts/evaluate.py --weights "$WEIGHTS" --tasks hellaswag,lambada --data-dir "$EVAL_DATA" \
    --no-download --limit 200 --device cuda --dtype bfloat16 --quiet --out "$OUT/evaluate.json"
# 5. the CUDA-only tests
step pytest 75 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py

# 6. the reproduction config on a local slice (speed only: Shakespeare's 1.4M tokens are ≈ 3 of its steps)
REPRO_STEPS=${REPRO_STEPS:-0}
if [ "$REPRO_STEPS" -gt 0 ]; then
    step reproduce_data 60 "$PY" scripts/prepare_data.py data/shakespeare --out-dir "$OUT/slice" \
        --shard-tokens 500000 --val-tokens 0 --no-progress
    step reproduce $((REPRO_STEPS * 2 + 120)) "$PY" scripts/pretrain.py --config configs/gpt2-124M-fineweb.yaml \
        --data-dir "$OUT/slice" --out-dir "$OUT/reproduce" --max-steps "$REPRO_STEPS" --eval-interval 100 \
        --eval-iters 2 --hellaswag-interval 0 --ckpt-interval 100000 --tensorboard false --wandb-mode disabled \
        --progress false
fi

echo "wrote $OUT (summary.txt, *.log, bench/, evaluate.json)"
! grep -q "exit [1-9]" "$OUT/summary.txt"
