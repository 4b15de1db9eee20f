import pytest
import torch

from analysis.errors import ModelLoadError
from analysis.models import load_model
from analysis.organism import OrganismConfig, train_organism
from analysis.organism.train import evaluate_recall


def test_small_organism_recalls_its_facts(small_study, small_corpus, organism):
    rec = evaluate_recall(organism, small_corpus)
    assert rec["recall"] >= 0.99 and rec["utility"] >= 0.9


def test_training_is_deterministic(small_corpus):
    cfg = OrganismConfig(seed=1, n_people=40, steps=5)
    a, _ = train_organism(cfg, corpus=small_corpus)
    b, _ = train_organism(cfg, corpus=small_corpus)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k


def test_exclude_ids_validated(small_corpus):
    with pytest.raises(ValueError, match="not in the corpus"):
        train_organism(OrganismConfig(n_people=40, steps=1, exclude_ids=["nope"]), corpus=small_corpus)


def test_saved_dir_roundtrip_and_fingerprint(organism_dir, organism, tmp_path):
    again = load_model(organism_dir, device="cpu")
    assert again.fingerprint == organism.fingerprint
    tokens = torch.tensor([[organism.tokenizer.bos_token_id, 5, 6, 7]])
    assert torch.equal(again.model(tokens), organism.model(tokens))
    info = again.info()
    assert info["n_layers"] == 4 and info["format"] == "organism"


def test_corrupt_weights_give_clear_error(organism_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(organism_dir, bad)
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated weights"):
        load_model(bad, device="cpu")
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_model(tmp_path / "empty")
