"""benchmarks/bench.py and what it rests on: the FLOP formula (a hand count and torch's FLOP counter), the peak
table, peak-memory measurement, the fixed-shape decode step, and the CLI end to end on a tiny model."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import bench, sections
from benchmarks.harness import peak_memory
from gpt2 import GPT, GPTConfig
from benchmarks.flops import flops_per_token, matmul_params, mfu, peak_tflops
from gpt2.sampler import SamplingConfig, generate

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n_layer", "2", "--n_head", "2", "--n_embd", "32", "--vocab_size", "256", "--device", "cpu"]
QUICK = ["--batch_sizes", "1", "2", "--seq_len", "16", "--gen_batch_sizes", "2", "--prompt_len", "4", "--new_tokens", "4",
         "--data_seq_len", "32", "--repeats", "1", "--warmup", "1"]


def test_flops_per_token_hand_count():
    L, C, V, T = 3, 16, 50, 8
    cfg = GPTConfig(n_layer=L, n_head=4, n_embd=C, vocab_size=V, n_positions=32)
    # forward, per token: 2 FLOPs per weight of each matrix multiply, and the attention over T positions
    projections = 2 * (C * 3 * C) + 2 * (C * C) + 2 * (C * 4 * C) + 2 * (4 * C * C)  # c_attn, c_proj, c_fc, c_proj
    attention = 2 * T * C + 2 * T * C  # q . k for T keys, then the weighted sum of T values (all heads together)
    forward = L * (projections + attention) + 2 * C * V  # + the head (the tied embedding)
    assert flops_per_token(cfg, T, backward=False) == forward
    assert flops_per_token(cfg, T) == 3 * forward  # backward: two multiplies per forward one
    assert matmul_params(GPTConfig.from_name("gpt2")) == 12 * 12 * 768**2 + 768 * 50257 == 123_532_032


def test_flops_per_token_matches_torch_flop_counter():
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=32)
    model, B, T = GPT(cfg), 3, 8
    x = torch.randint(0, cfg.vocab_size, (B, T))
    # The math attention backend runs as matmuls, which the counter sees (it has no formula for the CPU fused kernel).
    # Full logits and F.cross_entropy: the chunked loss does the same three head products, but accumulates the
    # weight's gradient with an in-place addmm_, which the counter has no formula for.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        logits = model(x)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten()).backward()
    assert counter.get_total_flops() == flops_per_token(cfg, T) * B * T


def test_peak_table_and_mfu():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.5
    assert peak_tflops("NVIDIA H100 PCIe") == 756.5  # not the SXM figure
    assert peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert peak_tflops("NVIDIA A10") == 125.0 and peak_tflops("NVIDIA A10G") is None  # A10G: no published figure
    assert peak_tflops("NVIDIA L4") == 121.0 and peak_tflops("NVIDIA L40S") is None
    assert peak_tflops("Tesla V100-PCIE-16GB") == 112.0
    assert mfu(1000.0, 6 * 10**9, 12.0) == pytest.approx(0.5)  # 6e12 FLOP/s of 12e12
    assert mfu(1000.0, 6 * 10**9, None) is None


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak RSS needs Linux's /proc")
def test_peak_memory_sees_an_allocation():
    out = {}
    with peak_memory(torch.device("cpu"), out):
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    assert 56 * 2**20 < out["added"] < 256 * 2**20


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_decoding_with_cuda_graphs():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=97, n_positions=64), seed=1).cuda()
    prompt = torch.randint(0, 97, (1, 4), device="cuda")
    expected = generate(model, prompt, 30, sampling=SamplingConfig("greedy")).tokens
    for _ in range(2):  # the second call replays the recorded graph, on the same caches
        assert torch.equal(generate(model, prompt, 30, sampling=SamplingConfig("greedy"), compile=True).tokens, expected)


def test_cli_tiny_model_writes_json_and_markdown(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    md.write_text("# Benchmarks\n")
    bench.main(TINY + QUICK + ["--compare_hf", "--json_out", str(out), "--append_md", str(md)])
    report = json.loads(out.read_text())
    assert report["config"]["repeats"] == 1 and report["machine"]["device"] == "cpu"
    assert list(report["sections"]) == ["train", "generate", "eval", "data", "forward"]
    train_rows = report["sections"]["train"]
    assert [(r["B"], r["T"], r["compile"]) for r in train_rows] == [(1, 16, False), (2, 16, False)]
    for row in train_rows:
        assert row["ours tok/s"] == pytest.approx(row["B"] * row["T"] / (row["ours ms/step"] / 1e3))
        assert row["ours MFU"] is None  # CPU: no peak, no MFU
        assert row["ours peak MiB"] > 0 and math.isfinite(row["ours/hf tok/s"])
        assert len(row["_runs_ms"]["ours"]) == len(row["_runs_ms"]["hf"]) == 1  # every timed run is kept
    paths = [(r["B"], r["path"]) for r in report["sections"]["generate"]]
    assert paths == [(2, "ours"), (2, "hf")]
    hf_row = report["sections"]["generate"][1]
    assert hf_row["same tokens as ours"] == 1.0  # the twin holds the same weights (training used copies)
    assert report["sections"]["eval"][0]["eval/forward"] > 0
    assert report["sections"]["data"][0]["tok/s"] > 0
    text = md.read_text()
    assert text.startswith("# Benchmarks\n") and "**train**" in text and "| B | T | compile |" in text
    assert report["machine"]["command"] in text and "_runs_ms" not in text


def test_rows_are_on_disk_as_soon_as_they_are_measured(tmp_path, monkeypatch):
    out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    md.write_text("# Benchmarks\n")

    def killed_after_one_row(b):  # a section stopped at a time limit after its first row
        yield {"B": 1, "tok/s": 123.0}
        raise KeyboardInterrupt  # what `timeout --signal=INT` raises

    monkeypatch.setattr(sections, "section_data", killed_after_one_row)
    with pytest.raises(KeyboardInterrupt):
        bench.main(TINY + QUICK + ["--what", "forward,data", "--batch_sizes", "1", "--json_out", str(out),
                                   "--append_md", str(md)])
    rows = json.loads(out.read_text())["sections"]
    assert [r["B"] for r in rows["forward"]] == [1] and rows["data"] == [{"B": 1, "tok/s": 123.0}]
    text = md.read_text()
    assert text.startswith("# Benchmarks\n") and "**forward**" in text and "| 1 | 123 |" in text
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]  # atomic: no temporary file left


def test_cli_rejects_unknown_section(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--what", "train,speed"])
    assert "choose from train, generate, eval, data, forward" in capsys.readouterr().err


def test_no_eager_times_the_compiled_rows_alone(tmp_path, monkeypatch):
    """--no-eager: gpu_check.sh's compile steps time the compiled step and the compiled decode step, not the
    eager rows another step has timed. torch.compile runs dynamo's graphs eagerly here (no inductor: quick)."""
    from gpt2.sampler import compiled_decode_one_token

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="eager", **kw))
    compiled_decode_one_token.cache_clear()
    try:
        report = bench.main(TINY + QUICK + ["--what", "train,generate", "--no-eager", "--compile", "--compile_decode",
                                            "--json_out", str(tmp_path / "b.json")])
    finally:
        compiled_decode_one_token.cache_clear()
        torch._dynamo.reset()
    assert [row["compile"] for row in report["sections"]["train"]] == [True, True]  # B = 1 and 2, compiled only
    assert [row["path"] for row in report["sections"]["generate"]] == ["ours compiled"]
    with pytest.raises(SystemExit, match="--no-eager leaves nothing to time"):
        bench.main(TINY + QUICK + ["--what", "train", "--no-eager", "--no-compile"])


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_torchrun_times_the_ddp_and_fsdp_steps(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "benchmarks.bench", "--what", "train", *TINY, "--batch_sizes", "2", "--seq_len", "16",
                          "--repeats", "1", "--warmup", "1", "--json_out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["sections"]["train"]
    assert [r["sharding"] for r in rows] == ["ddp", "fsdp"]
    for row in rows:
        assert row["ranks"] == 2 and row["ours tok/s"] == pytest.approx(2 * row["ours tok/s per process"])
