"""Issue 15: the restoration analysis's controls.

1. The reference retrain control is never judged against itself (every gap would be 0 by construction, a check
   that cannot fail): ``restore`` / ``restore_all`` / ``restoration_report`` / the diagnosis refuse it, the
   default judged models leave it out, and a retrain judged as a model is another seed (zoo_retrain_*), whose
   comparison with the reference is not trivially 0.
2. A positive control in which restoration must succeed: the original with the SAE's expert feature directions
   (the decoder rows of the features restoration steers) projected out of the residual stream at the SAE's
   layer. Its forget answers drop, and steering the expert features back (mode "replace", the engine's
   alphas) must bring most of them back, net of what it injects into the reference control.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from analysis.diagnosis import DiagnosisOptions, diagnose, stored_diagnosis
from analysis.errors import AnalysisInputError
from analysis.hooks import resid_post
from analysis.sae import SAEOptions, find_expert_features, model_signals, restore, restore_all, train_sae
from analysis.sae.control import CONTROL_NAME, expert_basis, projected_model
from analysis.sae.options import RESTORE_NET, STORE_KIND, RestoreOptions
from analysis.sae.runner import judged_models, positive_control
from analysis.sae.verdict import restoration_report
from analysis.scoring import make_batch

TEST_OPTS = SAEOptions(k=16, expansion=4, steps=300, batch_tokens=256)  # the SAE tests' options: one cached SAE
FEW = RestoreOptions(alphas=(1.0, 2.0))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(small_study):
    return train_sae(small_study, TEST_OPTS)


@pytest.fixture(scope="module")
def experts(small_study, trained):
    return find_expert_features(small_study.load("original"), trained, small_study.forget, small_study.retain)


# ---- 1. the reference control is never judged against itself ------------------------------------------------
def test_the_reference_control_is_never_judged_against_itself(small_study, trained, experts):
    ref = small_study.manifest.retrain
    assert ref == "retrain"
    with pytest.raises(AnalysisInputError, match="reference retrain control.*judged against itself"):
        restore(small_study, ref, FEW, trained=trained)
    with pytest.raises(AnalysisInputError, match="reference retrain control"):
        restore_all(small_study, ["npo", ref], FEW, trained=trained)  # refused before anything is computed
    assert small_study.store.get(STORE_KIND, [small_study.fingerprint(n) for n in ("original", "npo", ref)],
                                 FEW.validated().key(trained.sae_id, trained.layer)) is None
    # the default judged models leave it out; so do the reports restore_all gives by default
    assert ref not in judged_models(small_study) and "original" not in judged_models(small_study)
    assert judged_models(small_study) == [n for n in small_study.model_names if n not in ("original", ref)]
    # the report builder refuses one model's signals on both sides, by name or by fingerprint
    sig = model_signals(small_study, ref, trained, experts, FEW.alphas, probe_layers=[0])
    with pytest.raises(AnalysisInputError, match="judged against itself"):
        restoration_report(sig, sig, {})
    renamed = replace(sig, model="a_copy_of_the_control")
    with pytest.raises(AnalysisInputError, match="judged against itself"):
        restoration_report(renamed, sig, {})


def test_a_copy_of_the_reference_under_another_name_is_refused(small_study, trained, monkeypatch):
    ref = small_study.manifest.retrain
    real = type(small_study).fingerprint

    def fingerprint(self, name: str) -> str:
        return real(self, ref if name == "zoo_retrain_1" else name)  # zoo_retrain_1 with the control's weights

    monkeypatch.setattr(type(small_study), "fingerprint", fingerprint)
    with pytest.raises(AnalysisInputError, match="'zoo_retrain_1' has its weights"):
        restore(small_study, "zoo_retrain_1", FEW, trained=trained, use_store=False)


def test_a_judged_retrain_is_another_seed_and_not_trivially_equal(small_study, trained):
    zoo = small_study.manifest.extra["zoo"]["zoo_retrain_1"]
    assert zoo["status"] == "absent" and zoo["checks"]["seed_differs"]
    r = restore(small_study, "zoo_retrain_1", trained=trained)
    assert r.retrain["model"] == "retrain" and r.fingerprints["model"] != r.fingerprints["retrain"]
    # the comparison is not trivially 0: the per-layer probe accuracies differ from the control's somewhere
    diffs = {layer: v - r.retrain["probe_by_layer"][layer] for layer, v in r.probe_by_layer.items() if v is not None}
    assert any(d != 0 for d in diffs.values()), diffs
    assert r.probe_gap == pytest.approx(max(diffs.values())) and r.probe_gap != 0
    assert r.feature_retention != r.retrain["feature_retention"]
    # ... and a retrain of another seed still reads erased (the verdict's known answer for a true deletion)
    assert r.verdict == "erased", r.reasons


def test_the_diagnosis_refuses_the_reference(small_study):
    opts = DiagnosisOptions(sae=TEST_OPTS)
    for fn in (diagnose, stored_diagnosis):
        with pytest.raises(AnalysisInputError, match="reference retrain control.*judged against itself"):
            fn(small_study, "retrain", opts)


def test_the_validation_signals_leave_the_reference_out(small_study, trained, monkeypatch):
    from analysis.validation import signals_existing

    seen: list[list[str]] = []
    monkeypatch.setattr(signals_existing, "study_sae", lambda study: trained)
    with monkeypatch.context() as m:
        m.setattr("analysis.sae.runner.restore_all", lambda study, names, **kw: seen.append(list(names)))
        signals_existing.prepare_sae(small_study, ["original", "retrain", "npo"])
    assert seen == [["npo"]]
    with pytest.raises(AnalysisInputError, match="reference retrain control"):
        signals_existing.sae_probe_gap(small_study, "retrain")


# ---- 2. the positive control: restoration must succeed ------------------------------------------------------
def test_projected_model_removes_exactly_the_expert_directions(small_study, trained, experts):
    original = small_study.load("original")
    feats = experts.all_features()
    basis = expert_basis(trained, feats)
    assert basis.shape == (int(original.model.cfg.d_model), len(feats))  # independent directions: full rank
    torch.testing.assert_close(basis.T @ basis, torch.eye(len(feats)), atol=1e-5, rtol=0)
    w = trained.sae.W_dec.detach().float()[feats]
    torch.testing.assert_close(w @ basis @ basis.T, w, atol=1e-5, rtol=0)  # the basis spans every direction
    handle = projected_model(original, trained, feats)
    assert handle.name == CONTROL_NAME and handle.fingerprint != original.fingerprint and handle.path is None
    forget = small_study.forget
    batch = make_batch(original, [s.prompt for s in forget], [s.answer for s in forget])
    hooks = [resid_post(trained.layer - 1), trained.hook]
    _, before = original.model.run_with_cache(batch.tokens, names_filter=hooks.__contains__)
    _, after = handle.model.run_with_cache(batch.tokens, names_filter=hooks.__contains__)
    torch.testing.assert_close(after[hooks[0]], before[hooks[0]])  # below L: the original's
    x, x_p = before[trained.hook].float(), after[trained.hook].float()
    assert (x @ w.T).abs().max() > 1.0  # the original writes along the expert directions ...
    assert (x_p @ w.T).abs().max() < 1e-3  # ... the control does not
    torch.testing.assert_close(x_p, x - (x @ basis) @ basis.T, atol=1e-4, rtol=0)
    # the study's own handle is untouched (the hook lives on a copy)
    plain = original.model(batch.tokens, return_type="logits")
    torch.testing.assert_close(plain, original.model.run_with_hooks(batch.tokens, return_type="logits"))
    assert not original.model.hook_dict[trained.hook].fwd_hooks
    with pytest.raises(AnalysisInputError, match="no expert features"):
        expert_basis(trained, [])
    with pytest.raises(AnalysisInputError, match="must be in"):
        expert_basis(trained, [int(trained.sae.cfg.d_sae)])


def test_restoration_undoes_the_projection(small_study, trained):
    """Forget answers drop on the positive control and steering the expert features back restores most of
    them, net of the injection into the reference control (small study: 1.00 -> 0.50, restored to 1.00 at
    alpha 1 and 2; injection 0.07 / 0.14; net 0.93)."""
    r = positive_control(small_study, trained=trained)
    assert r.model == CONTROL_NAME and r.retrain["model"] == "retrain"
    assert r.acc_original == 1.0 and r.acc_unlearned <= r.acc_original - 0.25, r.evidence  # the answers dropped
    assert r.restoration_rate is not None and r.restoration_rate >= 0.9, r.rate_by_alpha
    assert r.restoration_rate_net is not None and r.restoration_rate_net >= 0.5, (r.rate_by_alpha,
                                                                                  r.injection_by_alpha)
    assert r.restoration_rate_net >= RESTORE_NET and r.verdict == "suppressed"
    assert any(c.startswith("net restoration") for c in r.reasons), r.reasons
    # per sample: every answer the projection removed and steering brought back is called suppressed
    back = [s for s in r.per_sample if not s["answers_now"] and s["restored"]]
    assert len(back) >= 0.5 * sum(not s["answers_now"] for s in r.per_sample)
    assert all(s["verdict"] == "suppressed" for s in back)
    # the projection removed the expert features themselves (retention far below the original's 1)
    assert r.feature_retention < 0.5
    assert r.options["control"] == "expert directions projected out"

