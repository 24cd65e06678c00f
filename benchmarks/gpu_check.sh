#!/usr/bin/env bash
# Everything a GPU session measures and checks, in two parts of about 5-6 minutes each on one H100
# (estimated: not yet run on a GPU), so that each fits a 10-minute call (the step limits below add up
# to under 600 s per part). Part 1 holds the issue's targets: run it first when GPU time is short.
#
#   bash benchmarks/gpu_check.sh 1 OUT_DIR   # CUDA tests; train.py's own step (bf16, compile, chunked
#                                            # loss, B=8/16/32, T=1024); generate() at batch 1/8/32,
#                                            # eager and compiled (CUDA graphs), as distill/evaluate run it
#   bash benchmarks/gpu_check.sh 2 OUT_DIR   # the same against transformers; train.py end to end
#                                            # (compile, checkpoints, eval) alone, under torchrun (DDP), and
#                                            # with --fsdp --activation_checkpointing
#
# It runs $PYTHON (default python3) as it is, with no install step: a machine without network needs
# torch, numpy, tqdm, tiktoken, pytest (and transformers for part 2) already there. Part 2's train.py
# run tokenizes Wikitext-2: set RAW_DIR to a folder holding wiki.valid.raw and wiki.test.raw (offline
# shards) and TIKTOKEN_CACHE_DIR to a BPE cache when the machine cannot download them.
# Each step has its own time limit and writes its own files, so one failure loses only that step.
# Every table is appended to OUT_DIR/BENCHMARKS-gpu.md, ready to paste into BENCHMARKS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: bash benchmarks/gpu_check.sh 1|2 OUT_DIR}
out=${2:?usage: bash benchmarks/gpu_check.sh 1|2 OUT_DIR}
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
md="$out/BENCHMARKS-gpu.md"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT_DIR/NAME.log, never stop the script
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$out/$name.log"
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

case $part in
1)
    nvidia-smi
    "$PY" -c 'import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
    # The tests that skip without CUDA, and the model/sampler tests on this machine's torch.
    step tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_bench.py \
        tests/test_model.py tests/test_sampler.py tests/test_losses.py "tests/test_data.py::test_train_batches_on_cuda_match_cpu" \
        "tests/test_weights.py::test_loads_onto_cuda_and_saves_from_it"
    # Target: >= 500K tokens/s for gpt2 at T=1024, bf16 with compile.
    step train 250 "$PY" bench.py --device cuda --what train --batch_sizes 8 16 32 --seq_len 1024 --compile \
        --repeats 10 --json_out "$out/bench-train.json" --append_md "$md"
    # Target: >= 1,000 decoded tokens/s at batch 1 (the "ours compiled" row: CUDA graphs).
    step generate 210 "$PY" bench.py --device cuda --what generate,eval,data --gen_batch_sizes 1 8 32 \
        --new_tokens 256 --uncached_new_tokens 64 --compile_decode --json_out "$out/bench-generate.json" --append_md "$md"
    ;;
2)
    nvidia-smi -L
    "$PY" -c 'import torch, transformers; print(torch.__version__, transformers.__version__)'
    step vs_hf 230 "$PY" bench.py --device cuda --compare_hf --what train,forward,generate --batch_sizes 16 \
        --gen_batch_sizes 1 32 --new_tokens 128 --uncached_new_tokens 16 --json_out "$out/bench-hf.json" --append_md "$md"
    # train.py itself on the GPU: a gpt2-shaped model from scratch (no weights to download), compiled,
    # bf16, an evaluation and checkpoints; then a few steps under torchrun (DDP with NCCL, one process).
    shards="$out/shards"
    if [ -n "${RAW_DIR:-}" ]; then
        step data 60 "$PY" -m data.prepare --raw_dir "$RAW_DIR" --offline --out_dir "$shards"
    else
        step data 60 "$PY" -m data.prepare --out_dir "$shards"
    fi
    common=(--init scratch --n_layer 12 --n_head 12 --n_embd 768 --data_dir "$shards" --seq_len 1024
            --micro_batch_size 16 --total_batch_tokens 131072 --max_steps 20 --warmup_steps 5 --eval_interval 20)
    step train_py 120 "$PY" train.py "${common[@]}" --out_dir "$out/run"
    step train_py_ddp 90 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 train.py "${common[@]}" \
        --max_steps 5 --eval_interval 5 --no-compile --out_dir "$out/run_ddp"  # the DDP wiring, not speed
    # FSDP2 with bf16 mixed precision and activation checkpointing (one process: the NCCL and sharding wiring)
    step train_py_fsdp 80 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 train.py "${common[@]}" \
        --max_steps 5 --eval_interval 5 --no-compile --fsdp --activation_checkpointing --out_dir "$out/run_fsdp"
    for run in run run_ddp run_fsdp; do  # the run logs hold tokens/s per step; the checkpoints are too big to bring back
        [ -f "$out/$run/log.jsonl" ] && cp "$out/$run/log.jsonl" "$out/$run.log.jsonl"
        rm -rf "$out/$run"
    done
    rm -rf "$shards"
    ;;
*)
    echo "part must be 1 or 2" >&2
    exit 2
    ;;
esac
