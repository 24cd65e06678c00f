#!/usr/bin/env bash
# Everything a GPU session measures and checks, in five parts that each end within 530 s (compilation
# included), so that each fits one 10-minute call on a lent machine with no network. Part 1 holds the
# targets: run it first when GPU time is short. Within a part the cheap (eager) rows come first, then one
# step per compile, each with a limit that covers a cold compile (no cache from an earlier call).
#
#   bash benchmarks/gpu_check.sh 1 OUT_DIR    # the targets: train.py's own step at B=16, T=1024, bf16, eager
#                                             # then compiled (target: >= 500K tok/s); generate() at batch 1,
#                                             # eager then the compiled CUDA-graph decode step (target: >= 1,000
#                                             # tok/s); evaluation and the data loader
#   bash benchmarks/gpu_check.sh 2 OUT_DIR    # the training sweep (B=8, 32; each compiled B its own step); the
#                                             # feature checks of gpt2/compat.py on this machine's torch
#   bash benchmarks/gpu_check.sh 3 OUT_DIR    # the generation sweep (batch 8, 32; each compiled batch its own
#                                             # step); the tests that need CUDA (the gpu marker)
#   bash benchmarks/gpu_check.sh 4 OUT_DIR    # ours against transformers: the training step and forward, then
#                                             # generation
#   bash benchmarks/gpu_check.sh 5 OUT_DIR    # train.py end to end (compile, checkpoints, evaluation) alone,
#                                             # under torchrun (DDP), with --fsdp --activation_checkpointing, and
#                                             # FSDP2 compiled (the CUDA default)
#   bash benchmarks/gpu_check.sh dry OUT_DIR  # every step of every part at a tiny shape on this CPU (~6 min on 2
#                                             # cores); exits 1 if any step fails. `make gpu-check-dry`;
#                                             # tests/test_gpu_check.py runs it in CI
#
# Each step's limit against what it needs cold on an H100 (estimates by reading: no GPU has been lent since
# the audit of issue 27, which measured compiles at ~60-80 s per training step and ~30-50 s per decode graph
# (its vs_hf step: two training steps and a decode graph in 150-210 s) and ~25 s of eager decoding per
# batch size (2 x 12 runs of 256 tokens); a step of 12 runs of a compiled row costs ~1-5 s more):
#
#   part  step                   limit s  estimate s  what it runs
#   1     train_eager                 60         ~20  CUDA start, the model, 12 eager steps of B=16
#         generate_eager              90         ~45  eager decoding at batch 1 (~25), evaluation, data loader
#         train_compiled             180     ~70-100  one training-step compile, 12 steps
#         generate_compiled          150      ~40-70  one decode-step compile and its CUDA graph, 24 runs
#         (part 1)                   480    ~175-235
#   2     train_sweep_eager           60         ~25  eager steps at B=8 and B=32
#         train_compiled_b8          180     ~70-100  its own compile (fixed shapes: dynamic=False)
#         train_compiled_b32         180     ~70-110  its own compile
#         compat                      30         ~10  tests/test_compat.py on this torch
#         (part 2)                   450    ~175-245
#   3     generate_sweep_eager        90         ~50  eager decoding at batch 8 and 32 (~25 each)
#         generate_compiled_b8       150      ~40-70  its own decode compile
#         generate_compiled_b32      150      ~40-70  its own decode compile
#         tests                       90         ~40  the gpu-marked tests only (the CPU tests run in CI)
#         (part 3)                   480    ~170-230
#   4     vs_hf_train                240    ~130-180  eager rows, then our step and transformers' compiled
#         vs_hf_generate             180      ~60-90  ours and transformers' eager decoding (128 tokens),
#                                                     our decode compile
#         (part 4)                   420    ~190-270
#   5     data                        30         ~10  offline shards from the raw text (skipped with SHARDS)
#         train_py                   180     ~90-130  train.py compiled, 20 steps, an evaluation, checkpoints
#         train_py_ddp                60         ~30  torchrun, 1 process, eager, 3 steps
#         train_py_fsdp               60         ~30  torchrun, --fsdp --activation_checkpointing, eager
#         train_py_fsdp_compile      150      ~70-100  torchrun, --fsdp compiled: FSDP2 under torch.compile
#         (part 5)                   480    ~230-300
#
# Every part's limits add up to at most 480 s of its 530 s, so no step is cut short by an earlier one
# that ran long; the estimates leave each step about twice what it should need.
#
# It runs $PYTHON (default python3) as it is, with no install step and no download: the machine needs
# torch, numpy, tqdm and pytest (transformers for the comparison; without it the benchmark measures ours alone
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
# its output to OUT_DIR/gpu_check.log; a failed or stopped step loses only its own remainder: the benchmark
# writes each row to its JSON and to OUT_DIR/BENCHMARKS-gpu.md (ready to paste into BENCHMARKS.md) as soon
# as it is measured. The script exits 1 when a step failed. OUT_DIR holds at most 8 files per part.
#
# The dry run: the same commands at a tiny shape on the CPU. Its compiled steps run torch.compile through
# dynamo and AOT autograd (the graphs, guards and recompiles, FSDP2 traced) with inductor's code generation
# left out (TORCH_COMPILE_OVERRIDE_BACKENDS=aot_eager, torch 2.13's debug switch; an older torch ignores it
# and compiles for real, only slower), and the FSDP2 step runs 2 processes on gloo. Its limits are the
# GPU's times 3 (DRY_SLACK): they catch a hang on a 2-core box that other jobs share, not a slow step.
set -uo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash benchmarks/gpu_check.sh 1|2|3|4|5|dry OUT_DIR"
mode=${1:?$usage}
out=${2:?$usage}
case $mode in 1 | 2 | 3 | 4 | 5 | dry) ;; *) echo "$usage" >&2; exit 2 ;; esac
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
md="$out/BENCHMARKS-gpu.md"
log="$out/gpu_check.log"
budget=${PART_BUDGET_S:-530}
# The dry run's limits catch a step that hangs, on a 2-core machine that other jobs may share: the GPU's
# limits times DRY_SLACK (default 3), the budget too.
slack=1
[ "$mode" = dry ] && slack=${DRY_SLACK:-3}
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
    local name=$1 limit=$(($2 * slack)) gpu_limit=$2
    shift 2
    local left=$((start + budget * slack - SECONDS - 15))  # 15 s for a stopped step to exit
    ((left < limit)) && limit=$left
    if ((limit < 10)); then
        echo "=== $name: skipped, the part's $((budget * slack)) s are spent" | tee -a "$log"
        failed+=("$name")
        return
    fi
    local note=""
    ((slack > 1)) && note=" = the GPU's ${gpu_limit}s x $slack"
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s$note): $*" | tee -a "$log"
    local t0=$SECONDS from
    from=$(($(stat -c %s "$log") + 1))
    # SIGINT first (the benchmark has written every row so far), a kill 10 s later if it does not stop
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
    bench=(--device cpu "${tiny[@]}" --vocab_size 256 --seq_len 32 --prompt_len 8 --data_seq_len 64 --repeats 1 --warmup 1)
    main_b=2 b_small=1 b_large=4 new=8 gen_small=2 gen_large=4
    model=("${tiny[@]}") T=32 micro=2 steps=2 fsdp_procs=2
    export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    export TORCH_COMPILE_OVERRIDE_BACKENDS=${TORCH_COMPILE_OVERRIDE_BACKENDS:->=0:aot_eager}  # see the top
else
    device=cuda
    bench=(--device cuda --repeats 10)
    main_b=16 b_small=8 b_large=32 new=256 gen_small=8 gen_large=32
    model=(--n_layer 12 --n_head 12 --n_embd 768) T=1024 micro=16 steps=20 fsdp_procs=1
fi
eager=(--no-compile --no-compile_decode)  # the rows without a compile: cheap, first in every part
compiled=(--no-eager --compile --compile_decode)  # the compiled rows alone: one compile per step

bench_step() {  # bench_step NAME LIMIT JSON ARGS...: benchmarks/bench.py, its rows in OUT_DIR/bench-JSON.json and the markdown
    local name=$1 limit=$2 json=$3
    shift 3
    step "$name" "$limit" "$PY" -m benchmarks.bench "${bench[@]}" "$@" --json_out "$out/bench-$json.json" --append_md "$md"
}

part1() {  # the targets
    bench_step train_eager 60 train "${eager[@]}" --what train --batch_sizes "$main_b"
    bench_step generate_eager 90 generate "${eager[@]}" --what generate,eval,data --gen_batch_sizes 1 \
        --batch_sizes "$main_b" --new_tokens "$new"
    # Target: >= 500K tokens/s for gpt2 at T=1024, bf16, compiled.
    bench_step train_compiled 180 train-compiled "${compiled[@]}" --what train --batch_sizes "$main_b"
    # Target: >= 1,000 decoded tokens/s at batch 1 (the compiled decode step: CUDA graphs).
    bench_step generate_compiled 150 generate-compiled "${compiled[@]}" --what generate --gen_batch_sizes 1 \
        --new_tokens "$new"
}

part2() {  # the training sweep; the feature checks on this machine's torch
    bench_step train_sweep_eager 60 train-sweep "${eager[@]}" --what train --batch_sizes "$b_small" "$b_large"
    for B in "$b_small" "$b_large"; do
        bench_step "train_compiled_b$B" 180 "train-compiled-b$B" "${compiled[@]}" --what train --batch_sizes "$B"
    done
    step compat 30 "$PY" -m pytest -q -p no:cacheprovider tests/test_compat.py
}

part3() {  # the generation sweep; the tests that need CUDA (the others run in CI, on the CPU)
    bench_step generate_sweep_eager 90 generate-sweep "${eager[@]}" --what generate \
        --gen_batch_sizes "$gen_small" "$gen_large" --new_tokens "$new"
    for B in "$gen_small" "$gen_large"; do
        bench_step "generate_compiled_b$B" 150 "generate-compiled-b$B" "${compiled[@]}" --what generate \
            --gen_batch_sizes "$B" --new_tokens "$new"
    done
    step tests 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
}

part4() {  # ours against transformers, each side eager and compiled
    bench_step vs_hf_train 240 hf-train --compare_hf --compile --no-compile_decode --what train,forward \
        --batch_sizes "$main_b"
    bench_step vs_hf_generate 180 hf-generate --compare_hf --no-compile --compile_decode --what generate \
        --gen_batch_sizes 1 --new_tokens "$((new / 2))"
}

part5() {
    # train.py itself: a gpt2-shaped model from scratch (no weights to load), compiled, bf16, an evaluation and
    # checkpoints; then a few steps under torchrun: DDP; FSDP2 with activation checkpointing; FSDP2 compiled.
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
    local run=("$PY" -m torch.distributed.run --standalone --nproc_per_node)
    step train_py 180 "$PY" train.py "${common[@]}" --max_steps "$steps" --eval_interval "$steps" --out_dir "$out/run"
    step train_py_ddp 60 "${run[@]}" 1 train.py "${common[@]}" --max_steps 3 --eval_interval 3 --no-compile \
        --out_dir "$out/run_ddp"  # the DDP wiring, not speed
    step train_py_fsdp 60 "${run[@]}" 1 train.py "${common[@]}" --max_steps 3 --eval_interval 3 --no-compile \
        --fsdp --activation_checkpointing --out_dir "$out/run_fsdp"
    step train_py_fsdp_compile 150 "${run[@]}" "$fsdp_procs" train.py "${common[@]}" --max_steps 3 --eval_interval 3 \
        --compile --fsdp --out_dir "$out/run_fsdp_compile"
    for run in run run_ddp run_fsdp run_fsdp_compile; do  # the run logs hold tokens/s per step; the checkpoints
        [ -f "$out/$run/log.jsonl" ] && cp "$out/$run/log.jsonl" "$out/$run.log.jsonl"  # are too big to bring back
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
1 | 2 | 3 | 4 | 5) "part$mode" ;;
dry) for part in 1 2 3 4 5; do start=$SECONDS; "part$part"; done ;;  # each part on its own budget, as on the GPU
esac
if ((${#failed[@]})); then
    echo "=== gpu_check $mode: failed or stopped: ${failed[*]}" | tee -a "$log"
    exit 1
fi
echo "=== gpu_check $mode: every step passed" | tee -a "$log"
