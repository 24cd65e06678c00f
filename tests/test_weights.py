"""gpt2.weights against transformers: checkpoints written by GPT2LMHeadModel (tiny random ones, no
downloads) load into our GPT with the same logits and greedy tokens, ours load back into
transformers, bad checkpoints are refused with the reason, and downloads are tested on a local server."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch

from gpt2 import GPT, GPTConfig
from gpt2 import download as D
from gpt2.weights import DownloadError, WeightsError, load_pretrained, save_hf

def transformers():
    """transformers, the reference, or skip the test: it is a test-only dependency (a GPU machine may lack it).
    Imported per test, so that the tests that do not compare with it run without it."""
    return pytest.importorskip("transformers")


def save_safetensors(tensors: dict, path) -> None:
    """The reference writer (safetensors.torch.save_file) for hand-made files, or skip the test without it."""
    pytest.importorskip("safetensors.torch").save_file(tensors, path)


TINY_HF = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=None, eos_token_id=None)


def random_hf_model(**config):
    """A GPT2LMHeadModel with every parameter drawn at a scale where a wrong transpose, bias or
    LayerNorm shows in the logits (the default init leaves biases 0 and LayerNorms at identity)."""
    hf = transformers()
    model = hf.GPT2LMHeadModel(hf.GPT2Config(**config)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if ".ln_" in name and name.endswith("weight") else 0))
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(the HF model, the directory save_pretrained wrote it to)."""
    model = random_hf_model(**TINY_HF)
    directory = tmp_path_factory.mktemp("tiny_hf")
    model.save_pretrained(directory)
    return model, directory


def hf_logits(model, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx).logits


def our_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)


def greedy(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding by full recomputation: the plainest reference for HF's generate()."""
    with torch.no_grad():
        for _ in range(steps):
            idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def assert_same_weights(a: GPT, b: GPT) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safetensors_directory_matches_transformers_logits_and_greedy_tokens(tiny):
    hf, directory = tiny
    model = load_pretrained(directory)
    assert not model.training and model.config.n_layer == 2 and model.config.vocab_size == 97
    assert model.lm_head.weight is model.transformer.wte.weight
    assert all(p.device.type == "cpu" and p.is_contiguous() and p.dtype == torch.float32 for p in model.parameters())

    idx = torch.randint(0, 97, (3, 17))
    assert (our_logits(model, idx) - hf_logits(hf, idx)).abs().max().item() <= 1e-5

    prompt = torch.randint(0, 97, (2, 8))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False,
                           pad_token_id=0)
    assert expected.shape == (2, 28) and torch.equal(greedy(model, prompt, 20), expected)


def test_bin_checkpoints_load_like_safetensors(tiny, tmp_path):
    hf, directory = tiny
    reference = load_pretrained(directory)
    shutil.copy(directory / "config.json", tmp_path / "config.json")
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")  # holds lm_head.weight, tied to wte
    assert_same_weights(load_pretrained(tmp_path), reference)
    # A pre-1.6 (non-zip) file cannot be memory-mapped; it is read instead.
    torch.save(hf.state_dict(), tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    assert_same_weights(load_pretrained(tmp_path / "legacy.bin"), reference)


def test_prefixless_gpt2model_file_with_mask_buffers_loads(tiny, tmp_path):
    # The published openai-community/gpt2 model.safetensors is a GPT2Model file: no `transformer.`,
    # no lm_head, and the causal-mask buffers h.{i}.attn.bias / attn.masked_bias of older versions.
    hf, directory = tiny
    sd = {k.removeprefix("transformer."): v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(TINY_HF["n_layer"]):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_safetensors(sd, tmp_path / "gpt2model.safetensors")
    shutil.copy(directory / "config.json", tmp_path / "config.json")
    assert_same_weights(load_pretrained(tmp_path / "gpt2model.safetensors"), load_pretrained(directory))


def write_checkpoint(tmp_path: Path, sd: dict, config_from: Path) -> Path:
    save_safetensors({k: v.contiguous().clone() for k, v in sd.items()}, tmp_path / "model.safetensors")
    shutil.copy(config_from / "config.json", tmp_path / "config.json")
    return tmp_path


def test_key_and_shape_errors_name_the_file_and_the_keys(tiny, tmp_path):
    hf, directory = tiny
    sd = dict(hf.state_dict())
    del sd["lm_head.weight"]

    bad = {k: v for k, v in sd.items() if k != "transformer.h.1.ln_2.bias"} | {"transformer.h.1.extra": torch.ones(1)}
    path = write_checkpoint(tmp_path, bad, directory)
    with pytest.raises(WeightsError, match=r"missing keys: h\.1\.ln_2\.bias; unexpected keys: h\.1\.extra") as e:
        load_pretrained(path)
    assert str(path / "model.safetensors") in str(e.value)

    bad = sd | {"transformer.h.0.mlp.c_fc.weight": sd["transformer.h.0.mlp.c_fc.weight"].t()}  # Linear layout
    with pytest.raises(WeightsError, match=r"h\.0\.mlp\.c_fc\.weight: expected \(32, 128\), got \(128, 32\)"):
        load_pretrained(write_checkpoint(tmp_path, bad, directory))

    bad = sd | {"h.0.ln_1.weight": sd["transformer.h.0.ln_1.weight"]}
    with pytest.raises(WeightsError, match="'h.0.ln_1.weight' twice"):
        load_pretrained(write_checkpoint(tmp_path, bad, directory))

    bad = sd | {"lm_head.weight": sd["transformer.wte.weight"] + 1}
    with pytest.raises(WeightsError, match="untied head is not supported"):
        load_pretrained(write_checkpoint(tmp_path, bad, directory))


class NotATensor:  # any class: unpickling it means importing and calling code named by the file
    pass


def test_bin_that_needs_arbitrary_unpickling_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"transformer.wte.weight": torch.ones(2, 2), "extra": NotATensor()}, path)
    with pytest.raises(WeightsError, match="arbitrary unpickling.*refused for safety") as e:
        load_pretrained(path)
    assert "NotATensor" in str(e.value) and "save_file" in str(e.value) and str(path) in str(e.value)


def test_dtype_dropout_and_the_tie_survive_loading(tiny):
    _, directory = tiny
    model = load_pretrained(directory, dtype=torch.bfloat16, dropout=0.25)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and model.config.dropout == 0.25
    assert model.lm_head.weight is model.transformer.wte.weight and not model.training
    assert load_pretrained(directory, dtype="float16").transformer.wpe.weight.dtype == torch.float16
    with pytest.raises(WeightsError, match="floating-point torch dtype"):
        load_pretrained(directory, dtype="int8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loads_onto_cuda_and_saves_from_it(tiny, tmp_path):
    hf, directory = tiny
    model = load_pretrained(directory, device="cuda")
    assert {p.device.type for p in model.parameters()} == {"cuda"} and model.lm_head.weight is model.transformer.wte.weight
    idx = torch.randint(0, 97, (2, 11))
    assert (our_logits(model, idx.cuda()).cpu() - hf_logits(hf, idx)).abs().max().item() <= 1e-4
    save_hf(model, tmp_path)
    assert_same_weights(load_pretrained(tmp_path), load_pretrained(directory))


def test_file_without_config_needs_a_published_shape(tiny, tmp_path):
    _, directory = tiny
    shutil.copy(directory / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match="n_layer=2, n_embd=32 is not a published shape.*config.json"):
        load_pretrained(tmp_path / "model.safetensors")


def test_unknown_sources_are_explained(tmp_path):
    with pytest.raises(WeightsError, match="'gpt3' is neither a published GPT-2 \\(gpt2, gpt2-medium, gpt2-large, "
                                           "gpt2-xl\\) nor an existing directory"):
        load_pretrained("gpt3")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(WeightsError, match="neither model.safetensors nor pytorch_model.bin .*notes.txt"):
        load_pretrained(tmp_path)


def test_save_hf_loads_in_transformers_and_back(tmp_path):
    config = GPTConfig(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    model = GPT(config, seed=3).eval()
    save_hf(model, tmp_path / "out")
    with pytest.importorskip("safetensors").safe_open(tmp_path / "out" / "model.safetensors", framework="pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
        assert f.get_slice("transformer.h.0.attn.c_attn.weight").get_shape() == [32, 96]  # Conv1D (in, out)
    assert metadata == {"format": "pt"} and "lm_head.weight" not in keys and all(k.startswith("transformer.") for k in keys)
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == config.to_hf_dict()

    hf = transformers().GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    idx = torch.randint(0, 97, (2, 13))
    assert (hf_logits(hf, idx) - our_logits(model, idx)).abs().max().item() <= 1e-5
    assert_same_weights(load_pretrained(tmp_path / "out"), model)
    with pytest.raises(TypeError, match="plain GPT module"):
        save_hf(torch.nn.Linear(2, 2), tmp_path / "x")


# ----------------------------------------------------------------------------- downloads, offline

class Server:
    """A local HTTP server for download tests: serves `files`, honours Range unless `ignore_range`,
    and cuts the next `cuts` responses short after `cut_after` bytes."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []  # (path, Range header) of every request
        self.cuts, self.cut_after, self.ignore_range = 0, 0, False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.log.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    return self.send_error(404)
                start = 0
                if self.headers.get("Range") and not server.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", self.headers["Range"])[1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cuts > 0:
                    server.cuts -= 1
                    payload = payload[:server.cut_after]
                self.wfile.write(payload)  # HTTP/1.0: the connection closes after this

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GPT2_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


DATA = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(DATA).hexdigest()


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.files["/f"] = DATA
    server.cuts, server.cut_after = 1, 30_000
    dest = D.download_file(server.url + "/f", tmp_path / "f", size=len(DATA), sha256=SHA)
    assert dest.read_bytes() == DATA and not (tmp_path / "f.part").exists()
    assert server.log == [("/f", None), ("/f", "bytes=30000-")]


def test_interrupted_download_keeps_its_part_for_the_next_run(server, tmp_path):
    server.files["/f"] = DATA
    server.cuts, server.cut_after = 99, 30_000
    with pytest.raises(DownloadError, match=f"{server.url}/f.*run again to resume"):
        D.download_file(server.url + "/f", tmp_path / "f", size=len(DATA), attempts=2)
    assert (tmp_path / "f.part").stat().st_size == 60_000 and not (tmp_path / "f").exists()
    server.cuts = 0
    assert D.download_file(server.url + "/f", tmp_path / "f", size=len(DATA), sha256=SHA).read_bytes() == DATA
    assert server.log[-1] == ("/f", "bytes=60000-")


def test_server_ignoring_range_restarts_the_download(server, tmp_path):
    server.files["/f"], server.ignore_range = DATA, True
    (tmp_path / "f.part").write_bytes(b"stale" * 100)
    assert D.download_file(server.url + "/f", tmp_path / "f", sha256=SHA).read_bytes() == DATA


def test_size_and_checksum_mismatches_are_refused(server, tmp_path):
    server.files["/f"] = DATA
    with pytest.raises(DownloadError, match=f"102,400 bytes but {len(DATA) + 1:,} were expected"):
        D.download_file(server.url + "/f", tmp_path / "f", size=len(DATA) + 1)
    with pytest.raises(DownloadError, match="expected sha256"):
        D.download_file(server.url + "/f", tmp_path / "f", sha256="0" * 64)
    assert not list(tmp_path.iterdir())  # nothing half-checked is left behind


def test_published_name_downloads_into_the_cache_then_works_offline(tiny, server, cache, monkeypatch):
    _, directory = tiny
    for name in ("config.json", "model.safetensors"):
        server.files[f"/openai-community/gpt2-medium/resolve/main/{name}"] = (directory / name).read_bytes()
    monkeypatch.setenv("GPT2_HF_ENDPOINT", server.url)
    model = load_pretrained("gpt2-medium")  # an unpinned name follows "main"; its config.json says tiny
    assert (cache / "gpt2-medium" / "main" / "model.safetensors").is_file() and len(server.log) == 2
    server.files.clear()
    assert_same_weights(load_pretrained("gpt2-medium"), model)  # from the cache: no request made
    assert_same_weights(model, load_pretrained(directory)) and len(server.log) == 2


def test_pinned_gpt2_checks_the_pinned_revision_and_size(tiny, server, cache, monkeypatch):
    _, directory = tiny
    server.files[f"/openai-community/gpt2/resolve/{D.PINNED['gpt2'][0]}/config.json"] = \
        (directory / "config.json").read_bytes()  # not the published 665-byte config.json
    monkeypatch.setenv("GPT2_HF_ENDPOINT", server.url)
    with pytest.raises(DownloadError, match="but 665 were expected"):
        load_pretrained("gpt2")


def test_unreachable_hub_says_what_to_do_instead(cache, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GPT2_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError) as e:
        load_pretrained("gpt2")
    message = str(e.value)
    assert f"http://127.0.0.1:{port}/openai-community/gpt2/resolve/607a30d783dfa663caf39e06633721c8d4cfcd7e/config.json" \
        in message and "pass its directory or file to load_pretrained" in message and "GPT2_CACHE_DIR" in message


# ----------------------------------------------------------------------------- the real gpt2 shape

@pytest.mark.slow
def test_gpt2_shape_matches_transformers_both_ways(tmp_path):
    model = GPT(GPTConfig.from_name("gpt2"), seed=0).eval()  # 124M random parameters at GPT-2's init scale
    save_hf(model, tmp_path / "ours")
    hf = transformers().GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    idx = torch.randint(0, 50257, (2, 64))
    expected = hf_logits(hf, idx)
    assert (our_logits(model, idx) - expected).abs().max().item() <= 1e-4

    # The published layout: a GPT2Model file (no prefix, no lm_head, with the 1024x1024 mask buffers)
    # and no config.json beside it, so the gpt2 shape must be recognised from the tensors.
    mask = torch.tril(torch.ones(1024, 1024)).view(1, 1, 1024, 1024)
    sd = hf.transformer.state_dict() | {f"h.{i}.attn.bias": mask.clone() for i in range(12)}
    save_safetensors(sd, tmp_path / "model.safetensors")
    del model, hf, sd
    loaded = load_pretrained(tmp_path / "model.safetensors")
    assert loaded.config == GPTConfig.from_name("gpt2")
    assert (our_logits(loaded, idx) - expected).abs().max().item() <= 1e-4
