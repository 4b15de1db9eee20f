"""Local Hugging Face checkpoints -> HookedTransformer: logits and hooks equal HF's, clear load errors.

Run with ``pytest -s`` to see the max |logit diff| per architecture.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from analysis.errors import ModelLoadError
from analysis.models import check_same_tokenizer, load_model
from analysis.models.hf import SUPPORTED_ARCHITECTURES, hf_config_to_tl
from tests.hf_fixtures import ARCHES, make_tiny_checkpoint, quiet_progress

# The first five architectures (tests/test_architectures.py covers every one), plus plain multi-head attention
# (TL's non-GQA path) with Llama-3.1 style rope scaling.
VARIANTS: dict[str, tuple[str, dict]] = {
    **{a: (a, {}) for a in ("gpt2", "pythia", "llama", "qwen2", "gemma")},
    "llama-mha-rope3": ("llama", {
        "num_key_value_heads": 4,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    }),
}
TOL = 1e-4
MAX_LOGIT_DIFF: dict[str, float] = {}


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: make_tiny_checkpoint(arch, root / f"tiny-{name}", seed=i, config_overrides=overrides)
            for i, (name, (arch, overrides)) in enumerate(VARIANTS.items())}


@pytest.fixture(scope="module", autouse=True)
def _report_diffs():
    yield
    if MAX_LOGIT_DIFF:
        print("\nmax |logit diff| HookedTransformer vs HF (float32):")
        for name, diff in MAX_LOGIT_DIFF.items():
            print(f"  {name:>16}: {diff:.2e}")


def batch_tokens(bos_id: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    toks = torch.randint(4, 260, (3, 24), generator=g)
    toks[:, 0] = bos_id
    return toks


def hf_model(path: Path):
    from transformers import AutoModelForCausalLM

    with quiet_progress():
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True).eval()


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_and_hooks_match_hf(tiny_dirs: dict[str, Path], name: str):
    from transformers import AutoTokenizer

    path = tiny_dirs[name]
    handle = load_model(path, device="cpu")
    ref_model = hf_model(path)
    toks = batch_tokens()
    with torch.no_grad():
        ref = ref_model(toks, output_hidden_states=True)
        logits, cache = handle.model.run_with_cache(toks, return_type="logits")
    diff = (logits - ref.logits).abs().max().item()
    MAX_LOGIT_DIFF[name] = diff
    print(f"\n[hf-logits] {name} ({handle.meta['hf_architecture']}): max |logit diff| = {diff:.2e}")
    assert diff < TOL
    assert ref.logits.abs().max() > 1.0  # non-trivial logits, so the comparison means something
    # No weight processing: the residual stream entering each block is HF's hidden state.
    for layer in range(handle.n_layers):
        hook = cache[f"blocks.{layer}.hook_resid_pre"]
        assert (hook - ref.hidden_states[layer]).abs().max().item() < TOL, layer

    arch = VARIANTS[name][0]
    assert handle.fmt == "hf"
    assert handle.meta["hf_architecture"] == ARCHES[arch]
    assert handle.model.cfg.original_architecture == ARCHES[arch]
    # The fixture tokenizer adds no BOS, so none is prepended, whatever the architecture (the tokenizer decides).
    assert handle.model.cfg.default_prepend_bos is False and handle.prepend_bos is False
    assert handle.dtype == torch.float32
    # The returned tokenizer is the checkpoint's own, unchanged (TL keeps its own copy on the model).
    fresh = AutoTokenizer.from_pretrained(str(path))
    assert handle.tokenizer.get_vocab() == fresh.get_vocab()
    assert handle.tokenizer("hi there")["input_ids"] == fresh("hi there")["input_ids"]
    assert handle.tokenizer.bos_token_id == fresh.bos_token_id == 1


def test_name_trap_config_is_read_not_guessed(tiny_dirs: dict[str, Path]):
    from transformers import AutoConfig

    gemma = hf_config_to_tl(AutoConfig.from_pretrained(str(tiny_dirs["gemma"])))
    assert (gemma["d_model"], gemma["d_head"], gemma["n_key_value_heads"], gemma["d_vocab"]) == (64, 16, 1, 260)
    llama = hf_config_to_tl(AutoConfig.from_pretrained(str(tiny_dirs["llama"])))
    assert llama["rotary_base"] == 500000.0 and llama["n_key_value_heads"] == 2
    mha = hf_config_to_tl(AutoConfig.from_pretrained(str(tiny_dirs["llama-mha-rope3"])))
    assert mha["n_key_value_heads"] is None and mha["use_NTK_by_parts_rope"]
    pythia = hf_config_to_tl(AutoConfig.from_pretrained(str(tiny_dirs["pythia"])))
    assert pythia["rotary_dim"] == 4 and pythia["parallel_attn_mlp"]


def test_fingerprint_and_info(tiny_dirs: dict[str, Path], tmp_path: Path):
    a = load_model(tiny_dirs["llama"], device="cpu", role="original")
    b = load_model(tiny_dirs["llama"], device="cpu", role="unlearned", name="other")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16

    changed = copy_dir(tiny_dirs["llama"], tmp_path / "tiny-llama-edited")
    state = load_file(str(changed / "model.safetensors"))
    key = "model.layers.0.mlp.down_proj.weight"
    state[key] = state[key] + 0.01
    save_file(state, str(changed / "model.safetensors"), metadata={"format": "pt"})
    c = load_model(changed, device="cpu")
    assert c.fingerprint != a.fingerprint
    toks = batch_tokens()
    with torch.no_grad():
        assert not torch.allclose(a.model(toks), c.model(toks))

    info = a.info()
    json.dumps(info)
    assert info["format"] == "hf" and info["architecture"] == "LlamaForCausalLM"
    assert info["hf_architecture"] == "LlamaForCausalLM" and info["hf_model_type"] == "llama"
    assert (info["n_layers"], info["d_model"], info["d_vocab"], info["tokenizer_vocab"]) == (2, 64, 260, 260)
    assert info["role"] == "original" and b.info()["name"] == "other"


def test_bfloat16_load(tiny_dirs: dict[str, Path]):
    """bf16 (the CUDA default): weights are converted in float32 and cast once on load.

    No bf16 forward on CPU: in some VMs the CPU advertises AMX but the kernel does not enable it, and
    oneDNN's bf16 matmul then dies with SIGILL (the default dtype on CPU is float32 anyway).
    """
    ref = load_model(tiny_dirs["gemma"], device="cpu")
    h = load_model(tiny_dirs["gemma"], device="cpu", dtype="bfloat16")
    assert h.dtype == torch.bfloat16 and h.info()["dtype"] == "bfloat16"
    ref_params = dict(ref.model.named_parameters())
    for k, v in h.model.named_parameters():
        assert v.dtype == torch.bfloat16, k
        assert torch.equal(v, ref_params[k].to(torch.bfloat16)), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["gpt2", "gemma"])
def test_cuda_load(tiny_dirs: dict[str, Path], name: str):
    ref = hf_model(tiny_dirs[name])
    toks = batch_tokens()
    with torch.no_grad():
        ref_logits = ref(toks).logits
        h32 = load_model(tiny_dirs[name], device="cuda", dtype="float32")
        assert h32.device.type == "cuda"
        diff32 = (h32.model(toks.cuda()).cpu() - ref_logits).abs().max().item()
        h16 = load_model(tiny_dirs[name], device="cuda")  # bf16 by default on CUDA
        assert h16.dtype == torch.bfloat16
        diff16 = (h16.model(toks.cuda()).float().cpu() - ref_logits).abs().max().item()
    print(f"\n[hf-logits] {name} on cuda: float32 {diff32:.2e}, bfloat16 {diff16:.2e}")
    assert diff32 < 1e-3 and diff16 < 0.5


def test_pytorch_bin_checkpoint(tiny_dirs: dict[str, Path], tmp_path: Path):
    """A .bin-only checkpoint loads (transformers uses torch.load(weights_only=True)) and matches."""
    d = copy_dir(tiny_dirs["gpt2"], tmp_path / "tiny-gpt2-bin")
    torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    h = load_model(d, device="cpu")
    assert h.meta["weights"] == ["pytorch_model.bin"]
    toks = batch_tokens()
    with torch.no_grad():
        assert (h.model(toks) - hf_model(tiny_dirs["gpt2"])(toks).logits).abs().max().item() < TOL


def test_sharded_checkpoint_without_architectures(tiny_dirs: dict[str, Path], tmp_path: Path):
    """Real 7B checkpoints come sharded (model.safetensors.index.json); hand-written configs may lack
    "architectures", in which case model_type decides."""
    src = tiny_dirs["pythia"]
    ref = hf_model(src)
    d = tmp_path / "tiny-pythia-sharded"
    with quiet_progress():
        ref.save_pretrained(str(d), max_shard_size="50KB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, d / f)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["architectures"]
    (d / "config.json").write_text(json.dumps(cfg))
    h = load_model(d, device="cpu")
    assert len(h.meta["weights"]) > 1 and h.meta["hf_architecture"] == "GPTNeoXForCausalLM"
    toks = batch_tokens()
    with torch.no_grad():
        assert (h.model(toks) - ref(toks).logits).abs().max().item() < TOL


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("arch_name", ["FooForCausalLM", "BertForMaskedLM"])
def test_unsupported_architecture(tiny_dirs: dict[str, Path], tmp_path: Path, arch_name: str):
    d = copy_dir(tiny_dirs["gpt2"], tmp_path / "tiny-foo")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = [arch_name]
    cfg["model_type"] = "foo" if arch_name.startswith("Foo") else "bert"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=f"unsupported architecture {arch_name}") as e:
        load_model(d, device="cpu")
    assert all(a in str(e.value) for a in SUPPORTED_ARCHITECTURES)


def test_truncated_weights(tiny_dirs: dict[str, Path], tmp_path: Path):
    d = copy_dir(tiny_dirs["llama"], tmp_path / "tiny-llama-truncated")
    weights = d / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(ModelLoadError, match="corrupt or truncated weights in .*model.safetensors"):
        load_model(d, device="cpu")


def test_missing_directory(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_model(tmp_path / "no-such-model", device="cpu")


def test_missing_weights(tiny_dirs: dict[str, Path], tmp_path: Path):
    d = copy_dir(tiny_dirs["gpt2"], tmp_path / "tiny-gpt2-noweights")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights in"):
        load_model(d, device="cpu")


def test_missing_tokenizer_files(tiny_dirs: dict[str, Path], tmp_path: Path):
    d = copy_dir(tiny_dirs["gemma"], tmp_path / "tiny-gemma-notok")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).unlink()
    with pytest.raises(ModelLoadError, match="no tokenizer files in"):
        load_model(d, device="cpu")


def test_malformed_config(tiny_dirs: dict[str, Path], tmp_path: Path):
    d = copy_dir(tiny_dirs["pythia"], tmp_path / "tiny-pythia-badcfg")
    (d / "config.json").write_text('{"architectures": ["GPTNeoXForCausalLM"], "hidden_size": ')
    with pytest.raises(ModelLoadError, match="config.json is not valid JSON"):
        load_model(d, device="cpu")


def test_weights_not_matching_config(tiny_dirs: dict[str, Path], tmp_path: Path):
    d = copy_dir(tiny_dirs["qwen2"], tmp_path / "tiny-qwen2-3layers")
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    cfg.pop("layer_types", None)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="do not match config.json"):
        load_model(d, device="cpu")


def test_check_same_tokenizer(tiny_dirs: dict[str, Path], tmp_path: Path):
    other = make_tiny_checkpoint("gpt2", tmp_path / "tiny-gpt2-othertok", tokenizer_variant=1)
    a = load_model(tiny_dirs["gpt2"], device="cpu", name="a")
    same = load_model(tiny_dirs["llama"], device="cpu", name="same")
    b = load_model(other, device="cpu", name="b")
    check_same_tokenizer([a, same])
    with pytest.raises(ModelLoadError, match="different tokenizers"):
        check_same_tokenizer([a, same, b])
