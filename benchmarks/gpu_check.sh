#!/usr/bin/env bash
# Everything a GPU session measures and checks, in two parts that each end within 540 s (compilation
# included), so that each fits one 10-minute call on a lent machine with no network. Part 1 holds the
# targets: run it first when GPU time is short. Within a part the most important figures come first.
#
#   bash benchmarks/gpu_check.sh 1 OUT_DIR    # train.py's own step at B=16, T=1024, bf16, eager and compiled
#                                             # (target: >= 500K tok/s); generate() at batch 1 with the compiled
#                                             # CUDA-graph decode step (target: >= 1,000 tok/s); then B=8/32 and
#                                             # batch 8/32, evaluation and the data loader
#   bash benchmarks/gpu_check.sh 2 OUT_DIR    # the CUDA tests; ours against transformers; train.py end to end
#                                             # (compile, checkpoints, evaluation) alone, under torchrun (DDP)
#                                             # and with --fsdp --activation_checkpointing
#   bash benchmarks/gpu_check.sh dry OUT_DIR  # every step of both parts at a tiny shape on this CPU, compile off
#                                             # (~2 min on 2 cores); exits 1 if any step fails. `make
#                                             # gpu-check-dry`; tests/test_gpu_check.py runs it in CI
#
# It runs $PYTHON (default python3) as it is, with no install step and no download: the machine needs
# torch, numpy, tqdm and pytest (transformers for the comparison; without it bench.py measures ours alone
# and the tests that compare with it skip). train.py reads token shards:
#   SHARDS=DIR     shards already prepared (a manifest.json in DIR): the data step is skipped. Default:
#                  OUT_DIR/shards, prepared by the data step and deleted at the end.
#   RAW_DIR=DIR    wiki.valid.raw and wiki.test.raw for the data step (offline shards: train/val = valid
#                  90/10, test = test). Default: shared/wikitext-2-raw, else ../shared/wikitext-2-raw.
#   TIKTOKEN_CACHE_DIR  the GPT-2 BPE files for the data step. Default: shared/tiktoken-cache, else
#                  ../shared/tiktoken-cache.
# A lent machine receives the working tree and the folder shared/ inside it, not ../shared: prepare the
# shards here and put them in shared/ (ignored by git), as the README's GPU section shows.
#
# Every step has a time limit, cut to what is left of the part's budget (PART_BUDGET_S, 530 s), and appends
# its output to OUT_DIR/gpu_check.log; a failed or stopped step loses only its own remainder: bench.py
# writes each row to its JSON and to OUT_DIR/BENCHMARKS-gpu.md (ready to paste into BENCHMARKS.md) as soon
# as it is measured. The script exits 1 when a step failed. OUT_DIR holds at most 8 files per part.
set -uo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash benchmarks/gpu_check.sh 1|2|dry OUT_DIR"
mode=${1:?$usage}
out=${2:?$usage}
case $mode in 1 | 2 | dry) ;; *) echo "$usage" >&2; exit 2 ;; esac
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
md="$out/BENCHMARKS-gpu.md"
log="$out/gpu_check.log"
budget=${PART_BUDGET_S:-530}
failed=()

first_dir() {  # the first of the folders given that exists, or nothing
    for d in "$@"; do [ -d "$d" ] && { echo "$d"; return; }; done
}
RAW_DIR=${RAW_DIR:-$(first_dir shared/wikitext-2-raw ../shared/wikitext-2-raw)}
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -n "$(first_dir shared/tiktoken-cache ../shared/tiktoken-cache)" ]; then
    TIKTOKEN_CACHE_DIR=$(cd "$(first_dir shared/tiktoken-cache ../shared/tiktoken-cache)" && pwd)
    export TIKTOKEN_CACHE_DIR
fi

step() {  # step NAME SECONDS COMMAND...: run it within min(SECONDS, what is left of the budget), log it, go on
    local name=$1 limit=$2
    shift 2
    local left=$((start + budget - SECONDS - 15))  # 15 s for a stopped step to exit
    ((left < limit)) && limit=$left
    if ((limit < 10)); then
        echo "=== $name: skipped, the part's ${budget} s are spent" | tee -a "$log"
        failed+=("$name")
        return
    fi
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$log"
    local t0=$SECONDS from
    from=$(($(stat -c %s "$log") + 1))
    # SIGINT first (bench.py has written every row so far), a kill 10 s later if it does not stop
    timeout --signal=INT --kill-after=10 "$limit" "$@" >> "$log" 2>&1
    local rc=$?
    tail -c +"$from" "$log" | tail -n 25
    echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
    ((rc == 0)) || failed+=("$name")
}

# The shapes: the real ones on a GPU; in the dry run the same commands at a tiny shape on the CPU.
if [ "$mode" = dry ]; then
    device=cpu
    tiny=(--n_layer 2 --n_head 2 --n_embd 32)
    bench=(--device cpu "${tiny[@]}" --vocab_size 256 --seq_len 32 --prompt_len 8 --data_seq_len 64
           --repeats 1 --warmup 1 --no-compile --no-compile_decode)
    sweep=(--batch_sizes 1 2) main_b=2 new=8 gen_sweep=(--gen_batch_sizes 2)
    model=("${tiny[@]}") T=32 micro=2 steps=2
    tests_mark=gpu  # collection and the CUDA tests' ids only: CI runs the tests themselves
    export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    device=cuda
    bench=(--device cuda --repeats 10 --compile --compile_decode)
    sweep=(--batch_sizes 8 32) main_b=16 new=256 gen_sweep=(--gen_batch_sizes 8 32)
    model=(--n_layer 12 --n_head 12 --n_embd 768) T=1024 micro=16 steps=20
    tests_mark=""
fi

part1() {
    # Target: >= 500K tokens/s for gpt2 at T=1024, bf16 with compile (the "compile: yes" row).
    step train 150 "$PY" -m benchmarks.bench "${bench[@]}" --what train --batch_sizes "$main_b" \
        --json_out "$out/bench-train.json" --append_md "$md"
    # Target: >= 1,000 decoded tokens/s at batch 1 (the "ours compiled" row: CUDA graphs).
    step generate 120 "$PY" -m benchmarks.bench "${bench[@]}" --what generate --gen_batch_sizes 1 --new_tokens "$new" \
        --json_out "$out/bench-generate.json" --append_md "$md"
    step train_sweep 140 "$PY" -m benchmarks.bench "${bench[@]}" --what train "${sweep[@]}" \
        --json_out "$out/bench-train-sweep.json" --append_md "$md"
    step generate_sweep 90 "$PY" -m benchmarks.bench "${bench[@]}" --what generate,eval,data "${gen_sweep[@]}" \
        --batch_sizes "$main_b" --new_tokens "$new" \
        --json_out "$out/bench-generate-sweep.json" --append_md "$md"
}

part2() {
    # The tests that skip without CUDA, and the model/sampler/loss tests on this machine's torch.
    step tests 110 "$PY" -m pytest -q -p no:cacheprovider ${tests_mark:+-m "$tests_mark"} tests/test_device.py \
        tests/test_bench.py tests/test_model.py tests/test_sampler.py tests/test_losses.py \
        "tests/test_data.py::test_train_batches_on_cuda_match_cpu" "tests/test_weights.py::test_loads_onto_cuda_and_saves_from_it"
    step vs_hf 130 "$PY" -m benchmarks.bench "${bench[@]}" --compare_hf --what train,forward,generate --batch_sizes "$main_b" \
        --gen_batch_sizes 1 --new_tokens "$((new / 2))" \
        --json_out "$out/bench-hf.json" --append_md "$md"
    # train.py itself: a gpt2-shaped model from scratch (no weights to load), compiled, bf16, an evaluation and
    # checkpoints; then a few steps under torchrun (DDP, one process) and FSDP2 with activation checkpointing.
    local shards=${SHARDS:-$out/shards}
    if [ -f "$shards/manifest.json" ]; then
        echo "=== data: $shards is prepared, skipped" | tee -a "$log"
    elif [ -n "$RAW_DIR" ]; then
        step data 30 "$PY" -m data.prepare --raw_dir "$RAW_DIR" --offline --out_dir "$shards"
    else
        echo "=== data: no shards and no raw text (set SHARDS or RAW_DIR: see the top of this script)" | tee -a "$log"
        failed+=(data)
    fi
    local common=(--init scratch "${model[@]}" --device "$device" --data_dir "$shards" --seq_len "$T"
                  --micro_batch_size "$micro" --total_batch_tokens "$((8 * micro * T))" --warmup_steps 2)
    step train_py 110 "$PY" train.py "${common[@]}" --max_steps "$steps" --eval_interval "$steps" --out_dir "$out/run"
    step train_py_ddp 50 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 train.py "${common[@]}" \
        --max_steps 3 --eval_interval 3 --no-compile --out_dir "$out/run_ddp"  # the DDP wiring, not speed
    step train_py_fsdp 50 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 train.py "${common[@]}" \
        --max_steps 3 --eval_interval 3 --no-compile --fsdp --activation_checkpointing --out_dir "$out/run_fsdp"
    for run in run run_ddp run_fsdp; do  # the run logs hold tokens/s per step; the checkpoints are too big to bring back
        [ -f "$out/$run/log.jsonl" ] && cp "$out/$run/log.jsonl" "$out/$run.log.jsonl"
        rm -rf "${out:?}/$run"
    done
    [ -z "${SHARDS:-}" ] && rm -rf "$shards"
}

start=$SECONDS  # the part's budget counts from here: nvidia-smi and the version check are in it
echo "=== gpu_check $mode, $(date -u '+%Y-%m-%d %H:%M') UTC, git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee -a "$log"
if [ "$device" = cuda ]; then
    nvidia-smi -L
    "$PY" -c 'import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
fi
case $mode in
1) part1 ;;
2) part2 ;;
dry) part1; start=$SECONDS; part2 ;;  # each part on its own budget, as on the GPU
esac
if ((${#failed[@]})); then
    echo "=== gpu_check $mode: failed or stopped: ${failed[*]}" | tee -a "$log"
    exit 1
fi
echo "=== gpu_check $mode: every step passed" | tee -a "$log"
