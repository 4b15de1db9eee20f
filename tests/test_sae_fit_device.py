"""Issue 15, two SAE defects.

1. The SAE runs on the device of the model it reads: the SAE used to be loaded on the CPU whatever the model's
   device, so every SAE analysis failed on a GPU. No GPU here: a model moved to the "meta" device stands in for
   one (its forward runs, shapes only), and the SAE must follow it there without moving the shared SAE.
2. The original's SAE is applied to every other model: each report now carries the SAE's fit (fraction of
   variance explained, normalised MSE) on the model's own activations, beside the original's, and a caveat when
   it is poor. Known answers of the metric; the original fits, a model trained from another seed does not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from analysis.cli import main
from analysis.models.loader import load_model
from analysis.sae import SAEOptions, find_expert_features, load_sae, restore, train_sae
from analysis.sae.fit import FitSums, model_fit, reconstruction_fit
from analysis.sae.options import MAX_SAE_FVE_DROP, MIN_SAE_FVE, STORE_KIND, RestoreOptions
from analysis.sae.restoration import expert_mask, original_features, steered_logits
from analysis.sae.result import RestorationReport, SAEFit
from analysis.sae.verdict import fit_caveat
from analysis.scoring import make_batch

TEST_OPTS = SAEOptions(k=16, expansion=4, steps=300, batch_tokens=256)  # the SAE of tests/test_sae.py (cached)
FEW = RestoreOptions(alphas=(2.0,), probe_layers=(0,))  # cheap restoration runs
PAGE = str(Path(__file__).resolve().parent.parent / "app" / "views" / "sae.py")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(small_study):
    return train_sae(small_study, TEST_OPTS)


@pytest.fixture(scope="module")
def meta_original(small_study):
    """A fresh handle of the original (not the study's cached one) moved to the meta device."""
    handle = load_model(small_study.model_path("original"), name="original", device="cpu")
    handle.model.to("meta")
    assert handle.device.type == "meta"
    return handle


def _params_on(module: torch.nn.Module) -> set[str]:
    return {p.device.type for p in module.parameters()}


# ---- 1. the device ----------------------------------------------------------------------------------------
def test_load_sae_puts_the_sae_on_the_device_asked_for(small_study, trained):
    assert _params_on(trained.sae) == {"cpu"}  # the original of the small study is on the CPU
    on_meta = load_sae(small_study, path=trained.path, device="meta")
    assert _params_on(on_meta.sae) == {"meta"} and on_meta.device.type == "meta"
    assert on_meta.path == trained.path and on_meta.layer == trained.layer
    again = train_sae(small_study, TEST_OPTS, device="meta")  # cached: loaded there
    assert _params_on(again.sae) == {"meta"}


def test_the_sae_follows_the_model_it_reads(small_study, trained, meta_original):
    here = trained.for_model(meta_original)
    assert _params_on(here.sae) == {"meta"}
    assert _params_on(trained.sae) == {"cpu"}  # the shared SAE is not moved under the other models
    assert trained.for_model(meta_original) is here  # one copy per device
    assert trained.for_model(small_study.load("original")) is trained
    assert here.hook == trained.hook and here.path == trained.path


def test_features_and_steering_run_on_the_models_device(small_study, trained, meta_original):
    forget = small_study.forget[:4]
    batch = make_batch(meta_original, [s.prompt for s in forget], [s.answer for s in forget])
    assert batch.tokens.device.type == "meta"
    # the old code encoded meta (there: CUDA) activations with a CPU SAE: "Tensor on device cpu is not on the
    # expected device meta!"
    f_o = original_features(meta_original, trained, batch)
    assert f_o.device.type == "meta" and f_o.shape == (len(forget), batch.tokens.shape[1], int(trained.sae.cfg.d_sae))
    experts = find_expert_features(small_study.load("original"), trained, small_study.forget, small_study.retain)
    mask = expert_mask(experts, forget, int(trained.sae.cfg.d_sae))  # on the CPU, as model_signals builds it
    for mode, scale in (("replace", None), ("add", torch.ones(int(trained.sae.cfg.d_sae)))):
        logits = steered_logits(meta_original, trained, batch, f_o, mask, [0.0, 2.0], mode, scale)
        assert logits.device.type == "meta" and logits.shape[0] == 2 * len(forget)
    assert _params_on(trained.sae) == {"cpu"}


# ---- 2. the fit -------------------------------------------------------------------------------------------
def test_reconstruction_fit_known_answers():
    # x rows (1, 2), (3, 4): mean (2, 3), sum |x - mean|^2 = 1 + 1 + 1 + 1 = 4, sum |x|^2 = 1 + 4 + 9 + 16 = 30;
    # x_hat rows (1, 2), (2, 4): squared error 1 -> FVE 1 - 1/4 = 0.75, nMSE 1/30
    fit = reconstruction_fit(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    assert fit.fve == pytest.approx(0.75) and fit.nmse == pytest.approx(1 / 30) and fit.n_tokens == 2
    # x rows (0, 0), (2, 0), (4, 0): mean (2, 0), sum |x - mean|^2 = 8, sum |x|^2 = 20; x_hat moves the first row
    # to (0, 1): squared error 1 -> FVE 7/8, nMSE 1/20; the same in two batches (the sums are streamed)
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    r = torch.tensor([[0.0, 1.0], [2.0, 0.0], [4.0, 0.0]])
    for fit in (reconstruction_fit(x, r), FitSums().add(x[:1], r[:1]).add(x[1:], r[1:]).result()):
        assert fit.fve == pytest.approx(0.875) and fit.nmse == pytest.approx(0.05) and fit.n_tokens == 3
    # the mean itself as the reconstruction explains nothing; a perfect one everything
    assert reconstruction_fit(x, x.mean(0).expand(3, 2)).fve == pytest.approx(0.0)
    assert reconstruction_fit(x, x).fve == 1.0 and reconstruction_fit(x, x).nmse == 0.0
    assert reconstruction_fit(torch.ones(3, 2), torch.ones(3, 2)).fve is None  # no variance: undefined
    assert FitSums().result() == SAEFit(fve=None, nmse=None, n_tokens=0)


def test_fit_caveat_thresholds():
    good = SAEFit(fve=0.9, nmse=0.1, n_tokens=10)
    assert fit_caveat(SAEFit(0.85, 0.15, 10), good) is None
    low = fit_caveat(SAEFit(MIN_SAE_FVE - 0.05, 0.3, 10), good, "layer 1")
    assert low is not None and f"below {MIN_SAE_FVE}" in low and "layer 1" in low and "original 0.90" in low
    drop = fit_caveat(SAEFit(0.99 - MAX_SAE_FVE_DROP - 0.01, 0.2, 10), SAEFit(0.99, 0.01, 10))
    assert drop is not None and "below the original's" in drop
    assert fit_caveat(SAEFit(None, None, 0), good) is None and fit_caveat(None, good) is None


def test_original_fits_a_model_from_another_seed_does_not(small_study, trained):
    samples = [*small_study.forget, *small_study.retain]
    own = model_fit(small_study.load("original"), trained, samples)
    assert own.fve is not None and own.fve > MIN_SAE_FVE and own.n_tokens > len(samples)
    assert own.fve == pytest.approx(1 - trained.health.fvu, abs=0.1)  # the training FVU, on other tokens
    for other in ("zoo_retrain_1", "zoo_twin"):  # trained from other seeds: another residual basis
        fit = model_fit(small_study.load(other), trained, samples)
        assert fit.fve is not None and fit.fve < MIN_SAE_FVE, (other, fit)
    # nor are random activations
    x = torch.randn(256, int(trained.sae.cfg.d_in), generator=torch.Generator().manual_seed(0))
    noise = reconstruction_fit(x, trained.sae.decode(trained.sae.encode(x)))
    assert noise.fve is not None and noise.fve < MIN_SAE_FVE


def test_reports_carry_the_fit_and_the_caveat(small_study, trained):
    twin = restore(small_study, "zoo_twin", FEW, trained=trained)
    same = restore(small_study, "readout_suppression", FEW, trained=trained)  # changed only at its readout
    assert twin.sae_fit is not None and twin.sae_fit_original is not None
    assert twin.sae_fit["fve"] < MIN_SAE_FVE < twin.sae_fit_original["fve"]
    assert twin.caveats and twin.caveats[0].startswith("caveat: the original's SAE explains only")
    assert twin.caveats[0] in twin.reasons  # in the verdict's reasons
    assert any("SAE fit on this model's own activations" in e for e in twin.evidence)
    assert twin.retrain["sae_fit"]["fve"] > MIN_SAE_FVE  # the retrain control's own fit, beside it
    assert same.caveats == [] and not any(r.startswith("caveat") for r in same.reasons)
    assert same.sae_fit["fve"] == pytest.approx(same.sae_fit_original["fve"], abs=1e-4)
    # stored with it, and read back the same
    again = restore(small_study, "zoo_twin", FEW, trained=trained)
    assert again == twin and RestorationReport.from_dict(json.loads(json.dumps(twin.to_dict()))) == twin


def test_reports_stored_before_the_fit_are_not_served(small_study, trained):
    """A report stored under the key of version 1 (before the fit existed) is not served for the same run."""
    key = FEW.validated().key(trained.sae_id, trained.layer)
    fps = [small_study.fingerprint(n) for n in ("original", "grad_diff", "retrain")]
    old = {k: v for k, v in restore(small_study, "zoo_twin", FEW, trained=trained).to_dict().items()
           if k not in ("sae_fit", "sae_fit_original", "caveats")}
    small_study.store.put(STORE_KIND, fps, {**key, "version": 1}, {**old, "model": "grad_diff", "reasons": ["old"]})
    fresh = restore(small_study, "grad_diff", FEW, trained=trained)
    assert fresh.model == "grad_diff" and fresh.reasons != ["old"]
    assert fresh.sae_fit is not None and fresh.sae_fit_original is not None


def test_cli_json_has_the_fit(small_study, trained, capsys):
    assert main(["restore", str(small_study.root), "--model", "zoo_twin", "--alphas", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sae_fit"]["fve"] < MIN_SAE_FVE < out["sae_fit_original"]["fve"]
    assert out["sae_fit_retrain"]["fve"] > MIN_SAE_FVE and {"fve", "nmse", "n_tokens"} <= set(out["sae_fit"])
    assert out["caveats"] and out["caveats"][0] in out["reasons"]


def test_page_shows_the_fit_beside_each_model(small_study, trained, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.multiselect(key="sae_models").set_value(["npo", "readout_suppression"]).run()
    assert not at.exception and not at.error
    fits = [c.value for c in at.caption if "SAE fit on its own activations" in c.value]
    assert len(fits) == 2 and all("explained variance 0." in c and "original 0." in c for c in fits), fits
