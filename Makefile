# One command runs the main job, one runs the tests; each installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned so that a CPU machine gets the CPU build it has on disk; a CUDA machine gets PyPI's CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install test test-fast clean data data-offline bench bench-gpu bench-gpu-hf bench-parts memory-plan gpu-check-dry

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install  ## every offline test, the 124M-shape parity tests included
	$(PY) -m pytest -q

test-fast: install  ## the quick tier only
	$(PY) -m pytest -q -m "not slow"

# ---- data ------------------------------------------------------------------------------------
DATA ?= shards/wikitext2
# Offline (no internet, no train split): the developer machines' copy of the valid/test splits.
RAW_DIR ?= ../shared/wikitext-2-raw

data: install  ## Wikitext-2 raw -> GPT-2 token shards in $(DATA) (downloads 4.7 MB once)
	$(PY) -m data.prepare --out_dir $(DATA)

data-offline: install  ## no internet: shards from local valid/test splits (train/val = valid 90/10, test = test)
	$(PY) -m data.prepare --raw_dir $(RAW_DIR) --offline --out_dir $(DATA)

# finetune prepares the data first when it is not there yet (offline flavour with OFFLINE=1).
$(DATA)/manifest.json: | install
	$(MAKE) $(if $(filter 1,$(OFFLINE)),data-offline,data)

# ---- experiment: fine-tune, distil, retrain, evaluate ------------------------------------------
# GPU:      make data finetune distill retrain eval          (GPT-2 124M, the real Wikitext-2 splits)
# Offline:  make OFFLINE=1 data-offline finetune distill retrain eval
#           (a 2-layer scratch model on the offline shards: ~5 min on an idle 2-core CPU)
# Each step writes a new folder and refuses to overwrite a finished run: `make experiment-clean` to redo.
OFFLINE ?=
RUNS ?= runs
INVERTED ?= shards/distilled-inverted
SAMPLE ?= shards/distilled-sample
SUBSET ?= shards/subset
ifeq ($(OFFLINE),1)
export TIKTOKEN_CACHE_DIR ?= $(abspath ../shared/tiktoken-cache)
BASE := --init scratch --n_layer 2 --n_head 4 --n_embd 128
OPTIM := --seq_len 256 --micro_batch_size 8 --total_batch_tokens 2048 --warmup_steps 3 --dropout 0.0
# a high rate for the scratch models' few steps; the student starts from trained weights, so a fine-tuning rate
SCRATCH_LR := --lr 1e-2 --min_lr 1e-3
STUDENT_FLAGS := --lr 1e-3 --min_lr 1e-4
FINETUNE_STEPS := --max_steps 20 --eval_interval 20
RETRAIN_STEPS := --max_steps 6 --eval_interval 6
# 16 sequences of 1 separator + 32 prompt + 224 generated tokens
DISTILL_SIZE := --n_tokens 4112 --batch_size 16
STUDENT_LAYERS := 0
EVAL_FLAGS := --max_eval_tokens 8192 --gen_passages 16 --gen_batch_size 16
else
BASE := --init gpt2
OPTIM :=
SCRATCH_LR :=
STUDENT_FLAGS :=
FINETUNE_STEPS :=
RETRAIN_STEPS := --max_steps 60 --eval_interval 10
DISTILL_SIZE := --fraction 0.25 --batch_size 128
STUDENT_LAYERS := 0 2 4 7 9 11
EVAL_FLAGS :=
endif
# inverted: weights p^-1 inside the plausible set {p >= 0.1 p_max}; its control: ordinary sampling (p^1) in the same set
INVERTED_STRATEGY := --alpha -1 --min_p 0.1
SAMPLE_STRATEGY := --alpha 1 --min_p 0.1

.PHONY: finetune distill retrain eval report experiment-clean study study-gpt2 study-report study-retrain study-retrain-report

# NGPU=8: data-parallel over 8 GPUs through torchrun (lower --micro_batch_size in ARGS if memory runs out)
NGPU ?= 1
LAUNCH = $(if $(filter 1,$(NGPU)),$(PY),$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NGPU))
ARGS ?=

finetune: install $(DATA)/manifest.json  ## fine-tune the base model (gpt2; OFFLINE=1: a scratch model) on $(DATA) -> $(RUNS)/finetune
	$(LAUNCH) train.py $(BASE) $(OPTIM) $(SCRATCH_LR) $(FINETUNE_STEPS) --data_dir $(DATA) --out_dir $(RUNS)/finetune $(ARGS)

distill: install  ## the teacher's synthetic sets (inverted p^-1, and ordinary sampling as control) + real text at the same budget
	$(PY) distill.py --teacher $(RUNS)/finetune --data_dir $(DATA) $(INVERTED_STRATEGY) $(DISTILL_SIZE) --out_dir $(INVERTED)
	$(PY) distill.py --teacher $(RUNS)/finetune --data_dir $(DATA) $(SAMPLE_STRATEGY) $(DISTILL_SIZE) --out_dir $(SAMPLE)
	$(PY) -m data.subset --data_dir $(DATA) --like $(INVERTED) --out_dir $(SUBSET)

retrain: install  ## the base model on each set, same steps, val on the real val split; and the KD student
	$(PY) train.py $(BASE) $(OPTIM) $(SCRATCH_LR) $(RETRAIN_STEPS) --data_dir $(INVERTED) --val_data_dir $(DATA) --out_dir $(RUNS)/retrain-inverted
	$(PY) train.py $(BASE) $(OPTIM) $(SCRATCH_LR) $(RETRAIN_STEPS) --data_dir $(SAMPLE) --val_data_dir $(DATA) --out_dir $(RUNS)/retrain-sample
	$(PY) train.py $(BASE) $(OPTIM) $(SCRATCH_LR) $(RETRAIN_STEPS) --data_dir $(SUBSET) --val_data_dir $(DATA) --out_dir $(RUNS)/retrain-subset
	$(PY) train.py --init $(RUNS)/finetune --init_layers $(STUDENT_LAYERS) --teacher $(RUNS)/finetune $(OPTIM) $(STUDENT_FLAGS) \
		$(RETRAIN_STEPS) --data_dir $(INVERTED) --val_data_dir $(DATA) --out_dir $(RUNS)/student

eval: install  ## test-split perplexity, BLEU, ROUGE of every model -> results/; then the experiment table
ifneq ($(OFFLINE),1)
	$(PY) evaluate.py --model gpt2 --data_dir $(DATA) $(EVAL_FLAGS)
endif
	for run in finetune retrain-inverted retrain-sample retrain-subset student; do \
		$(PY) evaluate.py --model $(RUNS)/$$run --data_dir $(DATA) $(EVAL_FLAGS) || exit 1; done
	$(PY) report.py

report: install  ## results/experiment.md (+ plots with matplotlib) from what eval wrote
	$(PY) report.py

experiment-clean:  ## delete the experiment's runs, sets and results (not the prepared data)
	rm -rf $(RUNS)/finetune $(RUNS)/retrain-inverted $(RUNS)/retrain-sample $(RUNS)/retrain-subset $(RUNS)/student \
		$(INVERTED) $(SAMPLE) $(SUBSET) results

# ---- the studies (studies/, python -m studies): the sweep, a dose-response over alpha with seeds, controls and tail metrics
STUDY_DATA ?= shards/wikitext2-offline
STUDY_ARGS ?=
STUDY_RESULTS ?= results/study
# the studies read the developer machines' offline copies: the BPE files from ../shared unless TIKTOKEN_CACHE_DIR is set
STUDY_PY = TIKTOKEN_CACHE_DIR=$${TIKTOKEN_CACHE_DIR:-$(abspath ../shared/tiktoken-cache)} $(PY)

$(STUDY_DATA)/manifest.json: | install
	$(STUDY_PY) -m data.prepare --raw_dir $(RAW_DIR) --offline --out_dir $(STUDY_DATA)

study: install $(STUDY_DATA)/manifest.json  ## the sweep on a 2-core CPU: small scratch teacher and arms, offline splits -> results/study/
	$(STUDY_PY) -m studies sweep --data_dir $(STUDY_DATA) $(STUDY_ARGS)

study-report: install  ## redraw the sweep's tables and plot ($(STUDY_RESULTS)/study.md) from what it wrote there
	$(PY) -m studies report sweep --results_dir $(STUDY_RESULTS)


# ---- the retrain study: the seed's regime (python -m studies retrain): a base pretrained on part A of the train split,
# the teacher = the base fine-tuned on all of it, the base continued on each set of part B; held-out test tokens only.
STUDY_RETRAIN_ARGS ?=
STUDY_RETRAIN_RESULTS ?= results/study-retrain

study-retrain: install $(STUDY_DATA)/manifest.json  ## the seed's regime on a 2-core CPU (about 2 h; resumable) -> results/study-retrain/
	$(STUDY_PY) -m studies retrain --data_dir $(STUDY_DATA) \
		--results_dir $(STUDY_RETRAIN_RESULTS) $(STUDY_RETRAIN_ARGS)

study-retrain-report: install  ## redraw $(STUDY_RETRAIN_RESULTS)/study-retrain.md from what the retrain study wrote there
	$(PY) -m studies report retrain --results_dir $(STUDY_RETRAIN_RESULTS)

# The same structure on a GPU with GPT-2 as the base (python -m studies retrain --base_init gpt2): the teacher = gpt2 fine-tuned
# on the real train split (3 passes), sets drawn from that split's prompts, gpt2 continued on each (4.4 passes), T = 1024.
study-gpt2: install $(DATA)/manifest.json  ## the seed's regime with GPT-2 itself (a GPU; resumable) -> results/study-gpt2/
	$(PY) -m studies retrain --base_init gpt2 --data_dir $(DATA) --work_dir $(GPT2_STUDY) --results_dir results/$(GPT2_STUDY) \
		--seq_len 1024 --batch_tokens 32768 --micro_batch_size 8 --teacher_steps 220 --teacher_lr 1e-4 --arm_steps 40 \
		--arm_lr 1e-4 --set_tokens 300000 --prompt_tokens 128 --gen_tokens 384 --heldout_tokens 0 $(GPT2_ARMS) \
		$(STUDY_RETRAIN_ARGS)
GPT2_STUDY ?= study-gpt2
GPT2_ARMS ?=

study-gpt2-third: install  ## the third edition's arms with GPT-2 itself (a GPU; resumable) -> results/study-gpt2-third/
	$(MAKE) study-gpt2 GPT2_STUDY=study-gpt2-third GPT2_ARMS="$(THIRD_ARMS_GPT2)"

study-teachers: install  ## the third edition's two studies side by side -> results/teachers.md
	$(PY) -m studies report teachers --weak results/study-weak --strong results/study-strong --out_dir results

# GPT-2 itself under the third edition's arms (a GPU): make study-gpt2-third
THIRD_ARMS_GPT2 = --alphas 1 -1 --min_ps 0.002 --kd_weights --kd_alphas --kd_min_p 0.002 --no-challenge \
	--less_data_shares 0.67 --mix_shares 0.67 0.33 --edit_alphas 1 -1 --dedup_alphas 1 -1 --prompt_loss_alphas 1 \
	--recipe_alphas 1 --recipe_lr 3e-5 --curve_interval 4 --article_cut

# ---- benchmarks ------------------------------------------------------------------------------
BENCH_FLAGS ?=

AMP_FLAGS ?=

bench: install  ## quick CPU speed check vs transformers: gpt2 shape, T=64 -> bench.json (BENCH_FLAGS="--append_md BENCHMARKS.md")
	$(PY) -m benchmarks.bench --device cpu --seq_len 64 --batch_sizes 1 --gen_batch_sizes 1 8 --prompt_len 16 \
		--new_tokens 128 --repeats 15 --warmup 1 --compile_decode --compare_hf $(BENCH_FLAGS)
	@# fp32 and bf16 side by side, ours and transformers in each: training steps and generation -> bench_cpu_amp.json
	$(PY) -m benchmarks.cpu_amp $(AMP_FLAGS)

bench-gpu: install  ## GPU sweep: T=1024, bf16, compile, micro-batch 1-16, generation with CUDA-graph decode
	$(PY) -m benchmarks.bench --device cuda --json_out bench-gpu.json $(BENCH_FLAGS)

bench-gpu-hf: install  ## ours vs transformers on the GPU: B=16 training, generation at batch 1 and 32
	$(PY) -m benchmarks.bench --device cuda --compare_hf --what train,forward,generate --batch_sizes 16 --gen_batch_sizes 1 32 \
		--json_out bench-gpu-hf.json $(BENCH_FLAGS)

# benchmarks/gpu_check.sh's steps, the same commands at a tiny shape on this CPU (~6 min on 2 busy cores); exits 1 if one
# fails. tests/test_gpu_check.py runs it in `make test`, so CI runs it on every commit.
GPU_CHECK_OUT ?= out/gpu-check-dry
gpu-check-dry: install  ## every step of the GPU session (benchmarks/gpu_check.sh dry) at a tiny shape on the CPU
	rm -rf $(GPU_CHECK_OUT)
	PYTHON=$(PY) bash benchmarks/gpu_check.sh dry $(GPU_CHECK_OUT)

memory-plan: install  ## per-GPU memory of gpt2 .. gpt2-xl under DDP / FSDP, with and without activation checkpointing
	$(PY) -m benchmarks.memory_plan

bench-parts: install  ## weight loading, data preparation and metrics against their references
	$(PY) -m benchmarks.load_weights
	$(PY) -m benchmarks.data_pipeline
	$(PY) -m benchmarks.metrics

clean:  ## remove the virtual environment (not data, runs or results)
	rm -rf $(VENV) .pytest_cache

# ---- the offline English corpus and the base pretrained on it (issue 28; docs/corpus.md) -------------------------
# The corpus: Debian packages of real English (GCIDE, WordNet, fortunes, the KJV Bible, the Devil's Dictionary, the
# Jargon File, FOLDOC), installed with apt-get (root), cleaned, deduplicated, checked against the Wikitext-2 test split.
CORPUS ?= shards/corpus
CORPUS_ARGS ?=

corpus: install  ## English text from Debian packages -> GPT-2 shards in $(CORPUS) (apt-get installs them; ~2 min)
	$(STUDY_PY) -m data.corpus --out_dir $(CORPUS) --heldout_raw $(RAW_DIR)/wiki.test.raw $(CORPUS_ARGS)

$(CORPUS)/manifest.json: | install
	$(MAKE) corpus

# The base: a scratch GPT-2 pretrained on the corpus, validated on its val split; the third edition of the study
# fine-tunes it as its teacher. Resumable: a second `make base` (after a stop, kill -9 or a new session that kept
# $(BASE_DIR)) continues from $(BASE_DIR)/latest.pt; the settings must stay those of the run it resumes.
BASE_DIR ?= runs/corpus-base
BASE_SHAPE ?= --n_layer 8 --n_head 4 --n_embd 192
BASE_STEPS ?= 4000
BASE_ARGS ?=
BASE_TRAIN = --init scratch $(BASE_SHAPE) --seq_len 256 --micro_batch_size 16 --total_batch_tokens 4096 \
	--lr 3e-3 --min_lr 3e-4 --warmup_steps 100 --dropout 0.0 --max_steps $(BASE_STEPS) --eval_interval 250 \
	--checkpoint_interval 100 --device cpu --data_dir $(CORPUS) --out_dir $(BASE_DIR)

.PHONY: corpus base base-export
base: install $(CORPUS)/manifest.json  ## pretrain the base on $(CORPUS) -> $(BASE_DIR) (many hours on 2 cores; resumes)
	$(STUDY_PY) train.py $(BASE_TRAIN) $(if $(wildcard $(BASE_DIR)/latest.pt),--resume) $(BASE_ARGS)

BASE_EXPORT ?= results/corpus-base
base-export: install  ## the base's best weights (best.pt) in bf16 as a Hugging Face folder in $(BASE_EXPORT) (--init takes it), with its records
	$(PY) -m gpt2.checkpoint export $(BASE_DIR) $(BASE_EXPORT) --dtype bfloat16
	cp $(BASE_DIR)/run.json $(BASE_DIR)/log.jsonl $(BASE_EXPORT)/
	cp $(CORPUS)/manifest.json $(BASE_EXPORT)/corpus-manifest.json

$(BASE_EXPORT)/model.safetensors: | install
	$(MAKE) base-export

# ---- the third edition (issue 28; docs/studies.md): the arms the seed's claims need (less real data, mixtures, token
# edits, deduplicated sets, the prompt out of the loss, a second recipe, every arm's val curve), 5 seeds, under two
# teachers: the weak one (the base pretrained on part A, as in the second edition) and the strong one (the base
# pretrained on the offline English corpus, make base base-export). Held-out slice cut at article boundaries.
THIRD_ARMS ?= --seeds 0 1 2 3 4 --alphas 1 -1 --min_ps 0.002 --extra_min_p 0.002 --kd_weights --kd_alphas \
	--kd_min_p 0.002 --no-challenge --less_data_shares 0.67 --mix_shares 0.67 0.33 --mix_alphas 1 -1 \
	--edit_alphas 1 -1 --dedup_alphas 1 -1 --prompt_loss_alphas 1 --recipe_alphas 1 --side_seeds 3 --curve_interval 2 \
	--article_cut
.PHONY: study-weak study-strong study-teachers study-gpt2-third
study-weak: install $(STUDY_DATA)/manifest.json  ## third edition, weak teacher (2 CPU cores; resumable) -> results/study-weak/
	$(STUDY_PY) -m studies retrain --data_dir $(STUDY_DATA) --work_dir study-weak --results_dir results/study-weak \
		$(THIRD_ARMS) $(STUDY_RETRAIN_ARGS)

study-strong: install $(STUDY_DATA)/manifest.json $(BASE_EXPORT)/model.safetensors  ## third edition, strong teacher (the corpus base) -> results/study-strong/
	$(STUDY_PY) -m studies retrain --base_init $(BASE_EXPORT) --data_dir $(STUDY_DATA) --work_dir study-strong \
		--results_dir results/study-strong $(THIRD_ARMS) $(STUDY_RETRAIN_ARGS)

