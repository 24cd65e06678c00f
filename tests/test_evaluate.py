"""evaluate.py end to end on tiny shards of real BPE tokens and a hand-built bigram GPT: the JSON and
the table, the figures against the metric functions called directly, the run record of a train.py
run, row replacement, and the errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re

import numpy as np
import pytest
import torch

import evaluate  # the command line, which the tests below run
from data.loader import SplitTokens
from data.shards import write_shard
from gpt2 import GPT, GPTConfig, tokenizer
from gpt2 import evaluation
from gpt2.evaluation import EvalConfig, EvalError, passage_starts, score_continuations
from gpt2.metrics.bleu import corpus_bleu
from gpt2.checkpoint import load_model
from gpt2.metrics.perplexity import evaluate_perplexity
from gpt2.metrics.rouge import corpus_rouge
from gpt2.sampler import SamplingConfig, generate
from gpt2.train_config import TrainConfig
from gpt2.weights import save_hf
from test_train import run_training

# Every token of this paragraph differs from the others, so in the paragraph repeated each token has
# exactly one successor: a bigram model can predict the text perfectly.
PARAGRAPH = ("The quick brown fox jumps over lazy dogs near river banks while seven tired hunters sleep "
             "under tall oak trees.\n")
N_EMBD, N_POSITIONS = 64, 64
REPEATS = {"train": 20, "val": 3, "test": 20}
# Small enough for the tiny model: 8 passages x (16 + 8) tokens from the test split.
GEN = ["--gen_passages", "8", "--gen_prompt_tokens", "16", "--gen_new_tokens", "8", "--gen_batch_size", "3"]
QUICK = ["--max_eval_tokens", "100", "--seq_len", "32", "--gen_passages", "2"]  # where only the table matters


def successors(stream: list[int]) -> dict[int, int]:
    succ: dict[int, int] = {}
    for a, b in zip(stream, stream[1:]):
        assert succ.setdefault(a, b) == b, f"token {a} has two successors: the paragraph must not repeat a token"
    return succ


def bigram_model(succ: dict[int, int], wrong_every: int | None = None) -> GPT:
    """A 1-layer GPT that predicts succ[token] from the last token alone, with p ~ 0.6.

    Token k of the K known ones embeds as u_k = e_{2k} - e_{2k+1} (zero mean, so ln_2 only rescales
    it to u_k * sqrt(C/2)). MLP hidden unit k fires (GELU(a*sqrt(2C) - b) ~ 6) only for token k, and
    its c_proj column adds u_next - u_k: the residual stream becomes u_next, whose tied logits single
    out the successor. Attention and positions are zeroed. With `wrong_every`, every such token
    predicts its successor's successor instead, so the continuations are partly wrong.
    """
    model = GPT(GPTConfig(n_positions=N_POSITIONS, n_embd=N_EMBD, n_layer=1, n_head=2))
    ids = sorted(succ)
    slot = {t: k for k, t in enumerate(ids)}
    assert 2 * len(ids) <= N_EMBD, "too many distinct tokens for this width"
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (model.transformer.h[0].ln_1, model.transformer.h[0].ln_2, model.transformer.ln_f):
            ln.weight.fill_(1.0)
        u = torch.zeros(len(ids), N_EMBD)
        u[torch.arange(len(ids)), 2 * torch.arange(len(ids))] = 1.0
        u[torch.arange(len(ids)), 2 * torch.arange(len(ids)) + 1] = -1.0
        model.transformer.wte.weight[ids] = u
        mlp = model.transformer.h[0].mlp
        a, b = 1.0, 5.0
        mlp.c_fc.weight[: len(ids)] = a * u
        mlp.c_fc.bias[: len(ids)] = -b
        fired = torch.nn.functional.gelu(torch.tensor(a * math.sqrt(2 * N_EMBD) - b), approximate="tanh")
        for t, k in slot.items():
            target = succ[t]
            if wrong_every and k % wrong_every == 0 and target in succ:
                target = succ[target]
            if target in slot:
                mlp.c_proj.weight[:, k] = (u[slot[target]] - u[k]) / fired
    return model.eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory, encoding):
    """Shards, the bigram model as a Hugging Face folder, and a train.py run started from it (lr 0: same weights)."""
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    data.mkdir()
    texts = {split: PARAGRAPH * n for split, n in REPEATS.items()}
    for split, text in texts.items():
        write_shard(data / f"{split}_000000.bin", np.array(tokenizer.encode(text)))
    succ = successors(tokenizer.encode(PARAGRAPH * 2))
    hf = save_hf(bigram_model(succ, wrong_every=3), root / "bigram-hf")
    perfect = save_hf(bigram_model(succ), root / "perfect")
    run = root / "runs" / "bigram"
    run_training(TrainConfig(init=str(hf), dropout=0.0, data_dir=str(data), out_dir=str(run), seq_len=32,
                             micro_batch_size=2, total_batch_tokens=64, lr=0.0, min_lr=0.0, warmup_steps=1,
                             max_steps=2, eval_interval=2, device="cpu", dtype="fp32", compile=False))
    return {"root": root, "data": data, "texts": texts, "hf": hf, "perfect": perfect, "run": run}


def run_cli(world, model, *extra) -> dict:
    args = ["--model", str(model), "--data_dir", str(world["data"]), "--device", "cpu", "--no-progress",
            "--table", str(world["root"] / "results.md"), "--out_json", str(world["root"] / "out.json"), *GEN, *extra]
    return evaluate.main(args)  # later flags win: `extra` may override the table and the JSON path


def out_json(world, name: str) -> dict:
    return json.loads((world["root"] / f"{name}.json").read_text())


# ------------------------------------------------------------------------------------- unit tests

def test_scores_of_identical_texts_are_perfect():
    texts = ["The bridge has seven arches.", "In 1850 a bridge of stone was built,\nat the town of Alder."]
    s = score_continuations(texts, list(texts))
    assert s["bleu"] == pytest.approx(100.0, rel=1e-12)
    assert s["rouge1"] == s["rouge2"] == s["rougeL"] == 1.0


def test_scores_take_the_reference_as_the_target():
    hyp, ref = ["the old road crossed the water"], ["where the old road crossed the water of the river"]
    s = score_continuations(hyp, ref)
    assert s["bleu"] == corpus_bleu(hyp, [ref]).score
    r1 = s["rouge_detail"]["rouge1"]
    assert r1["precision"] == 1.0 and r1["recall"] == pytest.approx(6 / 10)  # every hypothesis word is in the reference
    assert s["bleu_detail"]["bp"] < 1.0  # the hypothesis is the shorter one: the brevity penalty applies
    assert score_continuations(["nothing alike here"], ["completely different words"])["rouge1"] == 0.0


def test_rouge_stemmer_reaches_rouge():
    hyp, ref = ["the cats were running home"], ["the cat runs home"]
    plain, stemmed = score_continuations(hyp, ref), score_continuations(hyp, ref, rouge_stemmer=True)
    # ROUGE-1 matches: "the", "home" (P 2/5, R 2/4); stemmed also cats ~ cat, running ~ runs (P 4/5, R 4/4).
    assert plain["rouge1"] == pytest.approx(4 / 9, abs=1e-12) and stemmed["rouge1"] == pytest.approx(8 / 9, abs=1e-12)
    assert stemmed["bleu"] == plain["bleu"]  # BLEU never stems


def test_passage_starts_are_even_and_disjoint():
    starts = passage_starts(1000, 7, 100)
    assert starts == [i * 142 for i in range(7)]
    assert all(b - a >= 100 for a, b in zip(starts, starts[1:])) and starts[-1] + 100 <= 1000
    with pytest.raises(EvalError, match="--gen_passages"):
        passage_starts(1000, 11, 100)


def test_default_names(tmp_path):
    (tmp_path / "runs" / "finetune").mkdir(parents=True)
    (tmp_path / "runs" / "finetune" / "latest.pt").write_bytes(b"")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    assert evaluation.default_name(str(tmp_path / "runs" / "finetune") + "/") == "finetune"
    assert evaluation.default_name(str(tmp_path / "runs" / "finetune" / "latest.pt")) == "finetune-latest"
    assert evaluation.default_name(str(tmp_path / "hf" / "model.safetensors")) == "hf"
    assert evaluation.default_name("gpt2-medium") == "gpt2-medium"
    assert EvalConfig(model="gpt2").name == "gpt2"
    with pytest.raises(ValueError, match="'\\|'"):
        EvalConfig(name="a|b")


# ------------------------------------------------------------------------------------- end to end

def test_cli_writes_json_and_table_with_the_metrics_figures(world):
    res = run_cli(world, world["run"], "--out_json", str(world["root"] / "run.json"))
    saved = out_json(world, "run")
    assert saved["name"] == "bigram" and saved["data"]["whole_split"]
    assert saved["resolved"] == {"seq_len": N_POSITIONS, "stride": N_POSITIONS // 2, "device": "cpu",
                                 "precision": "cpu, fp32", "compiled_decoding": False}

    # Perplexity: evaluate_perplexity called directly, with the byte and word counts of the text written.
    model = load_model(world["run"])
    tokens = SplitTokens(world["data"], "test")
    text = world["texts"]["test"]
    direct = evaluate_perplexity(model, tokens, seq_len=N_POSITIONS, stride=N_POSITIONS // 2, batch_size=8,
                                 n_bytes=len(text.encode()), n_words=len(text.split()), progress=False)
    assert saved["perplexity"] == direct.as_dict()
    assert direct.ppl < 200  # it knows most of the text: a model that knew nothing would score ~50,000

    # Perplexity by frequency in the train split: the per-target NLLs, bucketed by hand here.
    per_token = evaluate_perplexity(model, tokens, seq_len=N_POSITIONS, stride=N_POSITIONS // 2, batch_size=8,
                                    progress=False, per_token=True)
    assert per_token.token_nll.shape == (direct.n_tokens,)
    assert float(per_token.token_nll.astype(np.float64).sum()) == pytest.approx(direct.total_nll, rel=1e-6)
    train_counts = np.bincount(SplitTokens(world["data"], "train")[:].astype(np.int64), minlength=50257)
    targets = tokens[:].astype(np.int64)[1:]
    unseen = train_counts[targets] == 0
    by_freq = saved["perplexity_by_frequency"]["buckets"]
    assert by_freq["unseen"]["n_targets"] == int(unseen.sum())
    assert sum(by_freq[b]["n_targets"] for b in ("head", "mid", "tail", "unseen")) == direct.n_tokens
    assert by_freq["all"]["ppl"] == pytest.approx(direct.ppl, rel=1e-5)
    if unseen.any():
        assert by_freq["unseen"]["mean_nll"] == pytest.approx(float(per_token.token_nll[unseen].mean()), rel=1e-5)

    # Continuations: regenerated here from the passage offsets the module docstring promises.
    n, P, G = len(tokens), 16, 8
    starts = [i * (n // 8) for i in range(8)]
    passages = torch.tensor(np.stack([tokens[s:s + P + G] for s in starts]).astype(np.int64))
    new = generate(model, passages[:, :P], G, sampling=SamplingConfig("greedy")).new_tokens
    hyps = [tokenizer.decode(row.tolist()) for row in new]
    refs = [tokenizer.decode(row.tolist()) for row in passages[:, P:]]
    bleu, rouge = corpus_bleu(hyps, [refs]), corpus_rouge(refs, hyps)
    gen = saved["generation"]
    assert gen["bleu"] == bleu.score and 0.0 < bleu.score < 100.0  # partly right: a non-trivial figure
    assert (gen["rouge1"], gen["rouge2"], gen["rougeL"]) == tuple(rouge[k].fmeasure for k in ("rouge1", "rouge2", "rougeL"))
    assert gen["examples"][0]["hypothesis"] == hyps[0]
    sacrebleu = pytest.importorskip("sacrebleu")  # and the reference implementation agrees
    assert gen["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)

    # The train.py run record: 2 steps x 64 tokens.
    run = saved["model"]["run"]
    assert run["train_tokens"] == 128 and run["steps"] == 2 and run["train_seconds"] > 0
    assert run["init"] == str(world["hf"])

    table = (world["root"] / "results.md").read_text()
    assert res["table"] == table and table.startswith(evaluation.HEADER)
    row = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert row[:4] == ["bigram", "data", "test", f"{n:,}"]
    assert row[4] == f"{direct.ppl:.2f}" and row[7] == f"{bleu.score:.2f}" and row[11] == "128"


def test_rerun_replaces_its_row_and_other_models_add_rows(world, tmp_path):
    table = tmp_path / "t.md"
    common = ["--table", str(table), "--out_json", str(tmp_path / "r.json")]
    run_cli(world, world["run"], *common, *QUICK)
    run_cli(world, world["run"], *common, *QUICK)
    assert len(table.read_text().splitlines()) == 3  # header, rule, one row
    run_cli(world, world["hf"], *common, *QUICK)  # another model: its own row, without training figures
    run_cli(world, world["run"], *common, *QUICK, "--split", "val")  # another split: its own row
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.read_text().splitlines()[2:]]
    assert [(r[0], r[2]) for r in rows] == [("bigram", "test"), ("bigram-hf", "test"), ("bigram", "val")]
    assert rows[1][11] == rows[1][12] == "—"
    # A row edited by hand is replaced too, the others kept as they are.
    table.write_text(table.read_text().replace("| bigram | data | test |", "| bigram | data | test | stale", 1))
    run_cli(world, world["run"], *common, *QUICK)
    assert len(table.read_text().splitlines()) == 5 and "stale" not in table.read_text()


def test_perfect_model_scores_perfectly(world, tmp_path):
    res = run_cli(world, world["perfect"], "--max_eval_tokens", "200", "--table", str(tmp_path / "t.md"), "--out_json", str(tmp_path / "p.json"))
    gen = res["generation"]
    assert gen["bleu"] == pytest.approx(100.0, rel=1e-12) and gen["rouge1"] == gen["rougeL"] == 1.0


def test_max_eval_tokens_is_a_prefix_and_recorded(world, tmp_path):
    res = run_cli(world, world["run"], "--max_eval_tokens", "300", "--seq_len", "32", "--stride", "16", "--gen_passages", "2",
                  "--table", str(tmp_path / "t.md"), "--out_json", str(tmp_path / "q.json"))
    assert res["data"]["n_tokens_evaluated"] == 300 and not res["data"]["whole_split"]
    assert res["perplexity"]["n_tokens"] == 299 and res["perplexity"]["stride"] == 16
    assert res["config"]["max_eval_tokens"] == 300
    assert res["perplexity"]["n_bytes"] == len(tokenizer.decode_bytes(SplitTokens(world["data"], "test")[:300]))
    assert "| 300 |" in (tmp_path / "t.md").read_text()


def test_first_token_evaluates_a_slice(world, tmp_path):
    """--first_token 100 --max_eval_tokens 300: perplexity, buckets and passages all on tokens [100, 400)."""
    res = run_cli(world, world["run"], "--first_token", "100", "--max_eval_tokens", "300", "--seq_len", "32",
                  "--stride", "16", "--gen_passages", "2", "--table", str(tmp_path / "t.md"), "--out_json", str(tmp_path / "f.json"))
    tokens = SplitTokens(world["data"], "test")[100:400]
    assert res["data"]["first_token"] == 100 and res["data"]["n_tokens_evaluated"] == 300
    assert res["perplexity"]["n_tokens"] == 299 and res["perplexity"]["n_bytes"] == len(tokenizer.decode_bytes(tokens))
    assert res["perplexity_by_frequency"]["buckets"]["all"]["n_targets"] == 299
    model = load_model(str(world["run"]))
    direct = evaluate_perplexity(model, tokens, seq_len=32, stride=16, progress=False)
    assert res["perplexity"]["loss"] == pytest.approx(direct.loss, rel=1e-6)
    first_prompt = tokenizer.decode(tokens[:16].tolist())  # passage 0 starts the slice, not the split
    assert res["generation"]["examples"][0]["prompt"] == first_prompt
    assert "| test[100:400] | 300 |" in (tmp_path / "t.md").read_text()
    with pytest.raises(SystemExit, match="--first_token"):
        run_cli(world, world["run"], "--first_token", str(len(SplitTokens(world["data"], "test")) - 1))


def test_rouge_stemmer_is_used_and_recorded(world, tmp_path):
    res = run_cli(world, world["run"], *QUICK, "--rouge_stemmer", "--table", str(tmp_path / "t.md"),
                  "--out_json", str(tmp_path / "s.json"))
    assert res["config"]["rouge_stemmer"] is True
    examples = res["generation"]["examples"]  # all of QUICK's 2 passages
    hyps, refs = [e["hypothesis"] for e in examples], [e["reference"] for e in examples]
    rouge = corpus_rouge(refs, hyps, use_stemmer=True)
    assert res["generation"]["rouge_detail"] == {k: dataclasses.asdict(v) for k, v in rouge.items()}
    assert f"{rouge['rouge1'].fmeasure:.4f} (stemmed)" in (tmp_path / "t.md").read_text()  # the table says so


def test_manifest_is_checked_and_recorded(world, tmp_path):
    """A manifest from data.prepare: the offline flag reaches the table, the decoded text is checked against it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "test_000000.bin").write_bytes((world["data"] / "test_000000.bin").read_bytes())
    text = world["texts"]["test"].encode()

    def manifest(sha1: str) -> None:
        (data / "manifest.json").write_text(json.dumps({"offline": True, "source": {"dataset": "toy"}, "splits": {
            "test": {"text_sha1": sha1, "shards": [{"file": "test_000000.bin"}]}}}))

    manifest(hashlib.sha1(text).hexdigest())
    common = ["--data_dir", str(data), "--gen_passages", "2", "--table", str(tmp_path / "t.md")]
    res = run_cli(world, world["run"], *common)
    assert res["data"]["text_sha1_matches_manifest"] is True and res["data"]["offline"] is True
    assert res["data"]["source"] == {"dataset": "toy"} and "| bigram | data (offline) | test |" in res["table"]
    manifest(hashlib.sha1(text + b"x").hexdigest())
    with pytest.raises(SystemExit, match="do not decode to the text manifest.json records"):
        run_cli(world, world["run"], *common)


# ------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("args,message", [
    (["--split", "nope"], "no 'nope' split.*make data"),
    (["--model", "no/such/model"], "cannot load --model no/such/model: .*neither a published GPT-2"),
    (["--gen_passages", "100"], "do not fit in the .* tokens evaluated: lower --gen_passages"),
    (["--gen_prompt_tokens", "60"], "exceed the model's context of 64"),
    (["--seq_len", "128"], "--seq_len 128 exceeds the model's context of 64"),
])
def test_errors_name_the_fix(world, tmp_path, args, message):
    with pytest.raises(SystemExit) as e:
        run_cli(world, world["run"], "--table", str(tmp_path / "t.md"), *args)
    assert re.search(message, str(e.value.code)), e.value.code
    assert not (tmp_path / "t.md").exists()


def test_foreign_table_is_not_overwritten(world, tmp_path):
    table = tmp_path / "notes.md"
    table.write_text("# my notes\n")
    with pytest.raises(SystemExit, match="not a table this script wrote"):
        run_cli(world, world["run"], "--table", str(table), "--out_json", str(tmp_path / "x.json"))
    assert table.read_text() == "# my notes\n"


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at spaces
    for field in ("--gen_passages", "--max_eval_tokens", "--stride", "seq_len // 2", "results/<name>.<split>.json"):
        assert field in text
