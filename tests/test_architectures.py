"""Every supported architecture on a tiny random checkpoint built from its transformers config class: logits and
hooks equal transformers', `erasure model info` names it, the export back to HF gives the same model, a causal
trace and an EAP-IG circuit run; the BOS rule and tied embeddings; one clear line for what does not load.

Run with ``pytest -s`` to see the max |logit diff| per architecture.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from analysis.cli import main
from analysis.data.schema import Sample
from analysis.errors import ModelExportError, ModelLoadError
from analysis.models import ModelHandle, load_model
from analysis.models.export import export_plan, prepare_for_training, save_hf_checkpoint, tl_to_hf_state_dict
from analysis.models.hf_arch import MAX_N_CTX, SUPPORTED_ARCHITECTURES, hf_config_to_tl
from tests.hf_fixtures import ARCHES, make_tiny_checkpoint, quiet_progress

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-4
NAMES = list(ARCHES)
# One answer token (one token a byte, the separator in the prompt): restoring the last prompt token's final
# residual then restores the answer's probability exactly.
SAMPLE = Sample(id="t1", prompt="The home of Zorbia is in ", answer="Q", subject="Zorbia")


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arch")
    return {name: make_tiny_checkpoint(name, root / f"tiny-{name}", seed=i) for i, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def handles(ckpts: dict[str, Path]) -> dict[str, ModelHandle]:
    """Loaded once per module, on first use; tests that change weights load their own."""

    class Lazy(dict):
        def __missing__(self, name: str) -> ModelHandle:
            self[name] = load_model(ckpts[name], device="cpu")
            return self[name]

    return Lazy()


def hf_model(path: Path):
    from transformers import AutoModelForCausalLM

    with quiet_progress():
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True).eval()


def batch_tokens() -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    toks = torch.randint(4, 260, (3, 24), generator=g)  # longer than the fixtures' sliding windows (8)
    toks[:, 0] = 1
    return toks


# ------------------------------------------------------------------------------------------ per architecture


@pytest.mark.parametrize("name", NAMES)
def test_logits_and_hooks_equal_transformers(handles: dict[str, ModelHandle], ckpts: dict[str, Path], name: str):
    handle, ref_model = handles[name], hf_model(ckpts[name])
    toks = batch_tokens()
    with torch.no_grad():
        ref = ref_model(toks, output_hidden_states=True)
        logits, cache = handle.model.run_with_cache(toks, return_type="logits")
    diff = (logits - ref.logits).abs().max().item()
    print(f"\n[arch] {name} ({ARCHES[name]}): max |logit diff| = {diff:.2e}")
    assert diff < TOL
    assert ref.logits.abs().max() > 1.0  # non-trivial logits, so the comparison means something
    for layer in range(handle.n_layers):  # no weight processing: every block's input is HF's hidden state
        assert (cache[f"blocks.{layer}.hook_resid_pre"] - ref.hidden_states[layer]).abs().max().item() < TOL, layer
    assert handle.meta["hf_architecture"] == handle.model.cfg.original_architecture == ARCHES[name]
    assert handle.meta["prepends_bos"] is False and handle.prepend_bos is False  # the fixture tokenizer adds none


@pytest.mark.parametrize("name", NAMES)
def test_model_info_names_the_architecture(ckpts: dict[str, Path], name: str, capsys: pytest.CaptureFixture):
    assert main(["model", "info", str(ckpts[name]), "--device", "cpu", "--json"]) in (0, None)
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == info["hf_architecture"] == ARCHES[name]
    assert info["format"] == "hf" and info["n_layers"] == 2 and info["d_model"] == 64


@pytest.mark.parametrize("name", NAMES)
def test_export_writes_the_same_model(handles: dict[str, ModelHandle], tmp_path: Path, name: str):
    """TL -> the checkpoint's own HF state dict -> a directory transformers loads with no missing or extra
    weight -> the TL model's logits; a tied checkpoint stays tied while its embeddings agree."""
    handle = handles[name]
    out = save_hf_checkpoint(handle, tmp_path / f"export-{name}")
    from transformers import AutoModelForCausalLM

    with quiet_progress():
        ref, info = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), info
    toks = batch_tokens()
    with torch.no_grad():
        assert (ref.eval()(toks).logits - handle.model(toks)).abs().max().item() < TOL
    tied = handle.meta["tied_embeddings"]
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert ("lm_head.weight" in fh.keys()) is not tied
    assert json.loads((out / "config.json").read_text()).get("tie_word_embeddings", False) is tied
    assert (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_trace_runs(handles: dict[str, ModelHandle], ckpts: dict[str, Path], name: str):
    """A causal trace on one sample with a subject: its clean probability is transformers' probability of the
    answer, and restoring the last layer's residual at the last prompt token restores it exactly."""
    from analysis.tracing import SubjectPool, TraceOptions, subject_input, trace

    handle = handles[name]
    others = [Sample(id=f"o{i}", prompt=f"The home of {s} is in", answer="Ab", subject=s)
              for i, s in enumerate(["Quorbia", "Vexland", "Plimtor"])]
    pool = SubjectPool.from_samples(handle.tokenizer, [SAMPLE, *others])
    r = trace(handle, SAMPLE, pool, TraceOptions(kinds=("resid",), n_samples=2))
    inp = subject_input(handle, SAMPLE)
    assert len(inp.answer_ids) == 1
    with torch.no_grad():
        logits = hf_model(ckpts[name])(torch.tensor([inp.ids[: inp.prompt_len]])).logits[0, -1]
    want = torch.softmax(logits.double(), -1)[inp.answer_ids[0]].item()
    assert r.clean == pytest.approx(want, abs=1e-5)
    scores = np.asarray(r.scores["resid"])
    assert scores.shape == (handle.n_layers, inp.prompt_len) and np.isfinite(scores).all()
    assert scores[-1, -1] == pytest.approx(r.clean, abs=1e-5)
    assert r.subject_range[1] - r.subject_range[0] == len("Zorbia")  # one token a byte


@pytest.mark.parametrize("name", NAMES)
def test_circuit_runs(handles: dict[str, ModelHandle], name: str):
    """EAP-IG edge scores on one sample (grouped-query and post-norm models included): one finite score per
    graph edge."""
    from analysis.circuits import EAPOptions, Graph, edge_scores
    from analysis.scoring import make_batch

    handle = handles[name]
    scores = edge_scores(handle.model, make_batch(handle, [SAMPLE.prompt], [SAMPLE.answer]), EAPOptions(steps=2))
    assert scores.shape == (1, len(Graph.of(handle.model).edges))
    assert np.isfinite(scores).all() and np.abs(scores).max() > 0


# ------------------------------------------------------------------------------------------------- BOS


@pytest.mark.parametrize("adds_bos", [True, False])
def test_answer_probability_equals_transformers_with_the_tokenizers_defaults(tmp_path: Path, adds_bos: bool):
    """A BOS is prepended exactly when the checkpoint's own tokenizer adds one, whatever the architecture (a
    Llama whose tokenizer adds none, as SmolLM2's, is scored without), so the answer probability is the one
    transformers gives with ``tokenizer(text)``'s defaults."""
    from transformers import AutoTokenizer

    from analysis.scoring import score_answers

    path = make_tiny_checkpoint("llama", tmp_path / f"tiny-llama-bos-{adds_bos}", seed=7,
                                tokenizer_adds_bos=adds_bos)
    handle = load_model(path, device="cpu")
    assert handle.prepend_bos is adds_bos and handle.info()["prepends_bos"] is adds_bos
    prompt, answer = "The capital of Zorbia is", "Quxville"
    got = float(score_answers(handle, [prompt], [answer]).logprob_sum[0])

    tok, ref = AutoTokenizer.from_pretrained(str(path)), hf_model(path)
    p_ids, full = tok(prompt)["input_ids"], tok(f"{prompt} {answer}")["input_ids"]
    assert (full[0] == tok.bos_token_id) is adds_bos and full[: len(p_ids)] == p_ids
    with torch.no_grad():
        logp = torch.log_softmax(ref(torch.tensor([full])).logits[0].double(), -1)
    want = sum(logp[t - 1, full[t]].item() for t in range(len(p_ids), len(full)))
    assert got == pytest.approx(want, abs=TOL)
    # The BOS changes the answer's probability: the other rule would not have matched transformers.
    with torch.no_grad():
        other = full[1:] if adds_bos else [tok.bos_token_id, *full]
        shift = -1 if adds_bos else 1
        lp2 = torch.log_softmax(ref(torch.tensor([other])).logits[0].double(), -1)
    alt = sum(lp2[t - 1, other[t]].item() for t in range(len(p_ids) + shift, len(other)))
    assert abs(alt - want) > 1e-3


# ------------------------------------------------------------------------------------------- tied embeddings


def test_tied_embeddings_are_two_parameters_and_untie_on_export(ckpts: dict[str, Path], tmp_path: Path):
    handle = load_model(ckpts["llama3"], device="cpu")  # Llama 3.2 / SmolLM2 style: tied
    assert handle.meta["tied_embeddings"] is True and handle.info()["tied_embeddings"] is True
    W_E, W_U = handle.model.embed.W_E, handle.model.unembed.W_U
    assert W_E.data_ptr() != W_U.data_ptr() and torch.equal(W_E, W_U.T)
    before = W_E.detach().clone()
    with torch.no_grad():
        W_U[:, 5:9] += 0.5  # the readout controls change the unembedding alone
    assert torch.equal(W_E, before)

    state, changes = tl_to_hf_state_dict(handle)
    assert changes == {"tie_word_embeddings": False}
    assert torch.equal(state["lm_head.weight"], W_U.detach().T) and torch.equal(state["model.embed_tokens.weight"],
                                                                                before)
    out = save_hf_checkpoint(handle, tmp_path / "untied")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    ref = hf_model(out)
    assert ref.lm_head.weight.data_ptr() != ref.model.embed_tokens.weight.data_ptr()
    toks = batch_tokens()
    with torch.no_grad():
        assert (ref(toks).logits - handle.model(toks)).abs().max().item() < TOL


def test_large_export_is_sharded_and_rewritten_cleanly(handles: dict[str, ModelHandle], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    import analysis.models.export as export

    handle, toks = handles["gemma3"], batch_tokens()
    monkeypatch.setattr(export, "MAX_SHARD_BYTES", 40_000)
    out = save_hf_checkpoint(handle, tmp_path / "sharded")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2 and not (out / "model.safetensors").exists()
    with torch.no_grad():
        assert (hf_model(out)(toks).logits - handle.model(toks)).abs().max().item() < TOL
    monkeypatch.setattr(export, "MAX_SHARD_BYTES", 4 << 30)
    save_hf_checkpoint(handle, out)  # one file now: the earlier shards and index are gone
    assert sorted(p.name for p in out.glob("model*")) == ["model.safetensors"]
    with torch.no_grad():
        assert (hf_model(out)(toks).logits - handle.model(toks)).abs().max().item() < TOL


# ------------------------------------------------------------------------------------------- export plan


def test_export_plan_freezes_what_has_no_hf_tensor(ckpts: dict[str, Path]):
    handle = load_model(ckpts["llama"], device="cpu")
    plan = export_plan(handle)
    assert {"blocks.0.attn.b_Q", "blocks.1.mlp.b_out", "unembed.b_U"} <= set(plan.unsourced)
    assert not any(k.endswith(("W_Q", "W_O", "W_in", "W_E", "W_U")) or k.endswith(".w") for k in plan.unsourced)
    assert plan.tied == () and plan.untouched == () and plan.tied_embeddings is False
    with torch.no_grad():
        handle.model.blocks[0].attn.b_Q[1, 2] = 0.3  # TL adds this bias; Llama has none
    with pytest.raises(ModelExportError, match="blocks.0.attn.b_Q"):
        tl_to_hf_state_dict(handle)
    frozen = prepare_for_training(handle.model, plan)
    assert "blocks.0.attn.b_Q" in frozen and not handle.model.blocks[0].attn.b_Q.requires_grad
    assert handle.model.blocks[0].attn.W_Q.requires_grad


def test_export_keeps_what_the_model_does_not_carry(ckpts: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    """Positions past the (capped) context are not in TL's GPT-2: the export keeps the checkpoint's rows."""
    import analysis.models.hf_arch as hf_arch

    monkeypatch.setattr(hf_arch, "MAX_N_CTX", 32)
    handle = load_model(ckpts["gpt2"], device="cpu")
    assert handle.model.cfg.n_ctx == 32 and handle.info()["n_ctx_checkpoint"] == 128
    assert export_plan(handle).untouched == ("transformer.wpe.weight",)
    with torch.no_grad():
        handle.model.pos_embed.W_pos[3] += 0.25
    state, _ = tl_to_hf_state_dict(handle)
    source = hf_model(ckpts["gpt2"]).transformer.wpe.weight
    assert torch.equal(state["transformer.wpe.weight"][32:], source[32:])
    assert torch.allclose(state["transformer.wpe.weight"][3], source[3] + 0.25)


def test_export_keeps_phi_one_layernorm_as_one(ckpts: dict[str, Path], tmp_path: Path):
    """Phi-1.5 has one LayerNorm per block that TL holds twice (ln1, ln2): changed apart they have no HF
    equivalent (refused); tied by prepare_for_training, a change to it exports and gives the same logits."""
    handle = load_model(ckpts["phi"], device="cpu")
    plan = export_plan(handle)
    assert ("blocks.0.ln1.w", "blocks.0.ln2.w") in plan.tied and ("blocks.1.ln1.b", "blocks.1.ln2.b") in plan.tied
    with torch.no_grad():
        handle.model.blocks[0].ln2.w[3] += 0.2
    with pytest.raises(ModelExportError, match="blocks.0.ln"):
        tl_to_hf_state_dict(handle)
    with torch.no_grad():
        handle.model.blocks[0].ln2.w[3] -= 0.2
    prepare_for_training(handle.model, plan)
    assert handle.model.blocks[0].ln2.w is handle.model.blocks[0].ln1.w
    with torch.no_grad():
        handle.model.blocks[0].ln1.w[3] += 0.2
    out = save_hf_checkpoint(handle, tmp_path / "phi-changed")
    toks = batch_tokens()
    with torch.no_grad():
        assert (hf_model(out)(toks).logits - handle.model(toks)).abs().max().item() < TOL
        assert (hf_model(ckpts["phi"])(toks).logits - handle.model(toks)).abs().max().item() > 1e-3


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("arch_name", ["BertForMaskedLM", "FrobnicatorForCausalLM"])
def test_unsupported_architecture_is_one_line(ckpts: dict[str, Path], tmp_path: Path, arch_name: str,
                                              capsys: pytest.CaptureFixture):
    d = tmp_path / "tiny-other"
    shutil.copytree(ckpts["gpt2"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(architectures=[arch_name], model_type="bert" if arch_name.startswith("Bert") else "frobnicator")
    (d / "config.json").write_text(json.dumps(cfg))
    assert main(["model", "info", str(d), "--device", "cpu"]) not in (0, None)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"unsupported architecture {arch_name}" in err, err
    assert all(a in err for a in SUPPORTED_ARCHITECTURES)


@pytest.mark.parametrize(("cls", "kwargs", "what"), [
    ("LlamaConfig", {"attention_bias": True}, "attention_bias=true"),
    ("LlamaConfig", {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}},
     "rope_type 'dynamic'"),
    ("Olmo2Config", {"num_key_value_heads": 2}, "grouped-query attention"),
    ("PhiConfig", {"qk_layernorm": True}, "qk_layernorm=true"),
])
def test_settings_tl_cannot_compute_are_refused(cls: str, kwargs: dict, what: str):
    import transformers as tf

    config = getattr(tf, cls)(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              vocab_size=260, **kwargs)
    config.architectures = [cls.replace("Config", "ForCausalLM")]
    with pytest.raises(ModelLoadError, match=what):
        hf_config_to_tl(config)


def test_long_declared_context_is_capped():
    """Llama 3.x declares 131072 positions: TL's rotary tables are capped (a longer input is refused)."""
    import transformers as tf

    config = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=1, vocab_size=260, max_position_embeddings=131072)
    config.architectures = ["LlamaForCausalLM"]
    d = hf_config_to_tl(config)
    assert d["n_ctx"] == MAX_N_CTX and d["n_key_value_heads"] == 1 and d["rotary_dim"] == 16
    assert d["rotary_base"] == pytest.approx(10000.0) and not math.isnan(d["eps"])
