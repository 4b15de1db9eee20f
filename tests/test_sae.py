"""SAE analyses: SAE health, the cache key (every training option) and determinism per seed, the controls'
verdicts (a retrain of another seed, zoo_retrain_1 -> erased, readout_suppression -> suppressed; the reference
retrain control is never judged against itself: tests/test_sae_positive_control.py), alpha = 0 steering is a no-op, the probe never
trains on a forget sample, bad inputs, the CLI, the page and the seeds table (benchmarks/sae_seeds.py)."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from analysis.cli import main
from analysis.errors import AnalysisInputError
from analysis.sae import (
    SAEOptions,
    find_expert_features,
    load_sae,
    probe_training_set,
    restore,
    run_probe,
    train_sae,
)
from analysis.sae.options import PROBE_MARGIN, RESTORE_NET, STORE_KIND, RestoreOptions
from analysis.sae.restoration import (
    STEERING_MODES,
    expert_mask,
    model_signals,
    original_features,
    steered_correct,
    steered_logits,
)
from analysis.sae.result import RestorationReport, Signals
from analysis.sae.train import META, sae_dir
from analysis.sae.verdict import verdict_of
from analysis.scoring import make_batch

TEST_OPTS = SAEOptions(k=16, expansion=4, steps=300, batch_tokens=256)
PAGE = str(Path(__file__).resolve().parent.parent / "app" / "views" / "sae.py")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(small_study):
    return train_sae(small_study, TEST_OPTS)


def test_sae_health_and_cache(small_study, trained):
    h = trained.health
    assert trained.layer == small_study.load("original").n_layers // 2
    assert trained.hook == f"blocks.{trained.layer}.hook_resid_post"
    assert h.l0 == pytest.approx(TEST_OPTS.k)
    assert 0.0 <= h.fvu < 0.5
    assert 0.0 <= h.dead_fraction < 0.5
    assert h.retain_acc_spliced >= h.retain_acc - 0.2
    again = train_sae(small_study, TEST_OPTS)  # cached: loaded, not retrained
    assert again.path == trained.path
    assert torch.equal(again.sae.W_dec, trained.sae.W_dec)
    assert load_sae(small_study, layer=trained.layer).fingerprint == small_study.fingerprint("original")


def test_cache_key_covers_every_option(small_study, trained):
    handle = small_study.load("original")
    fp, d_model = small_study.fingerprint("original"), int(handle.model.cfg.d_model)
    base = SAEOptions(k=4, expansion=1, steps=20, batch_tokens=64)

    def where(o: SAEOptions) -> Path:
        return sae_dir(small_study, o.resolved(handle), o.expansion * d_model, fp)

    variants = [base, *(replace(base, **{f: v}) for f, v in (("seed", 1), ("steps", 21), ("lr", 1e-3),
                                                                ("batch_tokens", 32), ("expansion", 2)))]
    assert len({where(o) for o in variants}) == len(variants)
    assert where(base) == where(replace(base, layer=handle.n_layers // 2))  # the default layer, resolved
    rng = torch.get_rng_state()
    a = train_sae(small_study, base)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded inside, the caller's RNG untouched
    b = train_sae(small_study, replace(base, seed=1))
    assert a.path == where(base) and b.path == where(replace(base, seed=1))
    assert not torch.equal(a.sae.W_dec, b.sae.W_dec)
    assert load_sae(small_study, options=base).path == a.path
    assert load_sae(small_study, options=replace(base, seed=1)).path == b.path
    assert load_sae(small_study, options=replace(base, seed=1)).options["seed"] == 1
    again = train_sae(small_study, base, force=True)  # same seed, retrained: the same SAE
    assert torch.equal(again.sae.W_dec, a.sae.W_dec) and torch.equal(again.sae.W_enc, a.sae.W_enc)
    with pytest.raises(AnalysisInputError, match="no SAE trained with these options"):
        load_sae(small_study, options=replace(base, seed=2))
    assert trained.path != where(base) and trained.options["steps"] == TEST_OPTS.steps


def test_controls_verdicts(small_study, trained):
    ret = restore(small_study, "zoo_retrain_1", trained=trained)  # another seed: not the reference itself
    sup = restore(small_study, "readout_suppression", trained=trained)
    assert ret.verdict == "erased", ret.evidence
    assert sum(s["verdict"] == "erased" for s in ret.per_sample) > len(ret.per_sample) / 2
    assert sup.verdict == "suppressed", sup.evidence
    # trap (b): mid-layer patching cannot see a readout-only change, the probe can
    assert sup.feature_retention == pytest.approx(1.0, abs=1e-4)
    assert sup.probe_accuracy is not None and sup.probe_accuracy >= 0.5
    assert sum(s["verdict"] == "suppressed" for s in sup.per_sample) > len(sup.per_sample) / 2
    assert len(sup.per_sample) == len(small_study.forget)
    fps = [small_study.fingerprint(n) for n in ("original", "readout_suppression", "retrain")]
    stored = small_study.store.get(STORE_KIND, fps, sup.options)
    assert stored is not None and stored["verdict"] == "suppressed"


def test_report_carries_its_probe_gap_and_reasons(small_study, trained):
    control = run_probe(small_study.load("retrain"), small_study.retain, small_study.forget)
    for name in ("readout_suppression", "npo", "zoo_retrain_1"):
        r = restore(small_study, name, trained=trained)
        ref = r.retrain["probe_by_layer"]
        assert ref == {str(k): v for k, v in control.acc_by_layer.items()}  # the retrain control's own probe
        gaps = {int(layer): v - (ref.get(layer) or 0.0) for layer, v in r.probe_by_layer.items() if v is not None}
        assert r.probe_gap == pytest.approx(max(gaps.values())) and gaps[r.probe_gap_layer] == r.probe_gap
        assert r.verdict == verdict_of(r.probe_gap, r.restoration_rate_net, r.feature_retention,
                                       r.retrain["feature_retention"])
        assert r.reasons, (name, r.verdict)
        if r.verdict == "suppressed":
            assert any(c.startswith("probe +") for c in r.reasons) == (r.probe_gap >= PROBE_MARGIN)
            assert any(c.startswith("net restoration") for c in r.reasons) == (
                r.restoration_rate_net is not None and r.restoration_rate_net >= RESTORE_NET)
    sup = restore(small_study, "readout_suppression", trained=trained)
    assert sup.verdict == "suppressed" and f"probe {sup.probe_gap:+.2f} over the retrain control" in sup.reasons


def test_report_round_trip_and_old_rows(small_study, trained):
    sup = restore(small_study, "readout_suppression", trained=trained)
    d = json.loads(json.dumps(sup.to_dict()))
    assert RestorationReport.from_dict(d) == sup
    old = {k: v for k, v in d.items() if k not in ("probe_gap", "probe_gap_layer", "reasons")}  # stored before
    assert RestorationReport.from_dict(old) == sup
    sig = model_signals(small_study, "retrain", trained, find_expert_features(
        small_study.load("original"), trained, small_study.forget, small_study.retain), probe_layers=[0, 1])
    again = Signals.from_dict(json.loads(json.dumps(sig.to_dict())))
    assert again == sig and again.probe.best_layer() == sig.probe.best_layer()


def test_restore_options_and_steering_modes(small_study, trained):
    assert STEERING_MODES.names() == ("replace", "add")
    with pytest.raises(AnalysisInputError, match="unknown steering mode"):
        STEERING_MODES.get("subtract")
    assert RestoreOptions(alphas=[1, 2]).validated().alphas == (1.0, 2.0)
    for bad, match in ((RestoreOptions(alphas=()), "at least one"), (RestoreOptions(alphas=(float("nan"),)), "finite"),
                       (RestoreOptions(k=0), "k must be"), (RestoreOptions(probe_layers=()), "probe layer")):
        with pytest.raises(AnalysisInputError, match=match):
            bad.validated()
    with pytest.raises(AnalysisInputError, match="out of range"):
        restore(small_study, "npo", RestoreOptions(probe_layers=(0, 99)), trained=trained)
    # chosen probe layers are part of the store key; every layer (None) keeps the key it always had
    assert "probe_layers" not in RestoreOptions().key("sae", 1)
    assert RestoreOptions(probe_layers=(0,)).key("sae", 1)["probe_layers"] == [0]
    few = restore(small_study, "readout_suppression", RestoreOptions(alphas=(2.0,), probe_layers=(0, 1)),
                  trained=trained)
    assert set(few.per_alpha) == {"2"} and set(few.probe_by_layer) == {"0", "1"}


def test_alpha_zero_changes_nothing(small_study, trained):
    original, handle = small_study.load("original"), small_study.load("npo")
    forget = small_study.forget
    batch = make_batch(handle, [s.prompt for s in forget], [s.answer for s in forget])
    f_o = original_features(original, trained, batch)
    experts = find_expert_features(original, trained, forget, small_study.retain)
    mask = expert_mask(experts, forget, int(trained.sae.cfg.d_sae))
    assert mask.any()
    plain = handle.model(batch.tokens, return_type="logits")
    for mode, scale in (("replace", None), ("add", torch.ones(int(trained.sae.cfg.d_sae)))):
        steered = steered_logits(handle, trained, batch, f_o, mask, [0.0, 5.0], mode, scale)
        n = len(forget)
        torch.testing.assert_close(steered[:n], plain, rtol=0, atol=1e-5)
        assert not torch.allclose(steered[n:], plain, atol=1e-3)  # alpha 5 does change something
    # steering the original with its own features is the identity at every alpha (f_o == f_u)
    corr = steered_correct(original, trained, batch, f_o, mask, [0.0, 10.0])
    assert torch.equal(corr[0], corr[1])


def test_probe_never_sees_a_forget_sample(small_study, monkeypatch):
    forget, retain = small_study.forget, small_study.retain
    rows = probe_training_set(retain, forget)
    forget_prompts = {s.prompt for s in forget} | {p for s in forget for p in s.metadata.get("train_prompts", [])}
    assert not {r[0] for r in rows} & {s.id for s in forget}
    assert not {r[2] for r in rows} & forget_prompts
    seen: list[list[str]] = []
    import analysis.sae.probe as probe_mod

    real = probe_mod.prompt_acts

    def spy(handle, prompts, answers, hooks, batch_size=256):
        seen.append(list(prompts))
        return real(handle, prompts, answers, hooks, batch_size)

    monkeypatch.setattr(probe_mod, "prompt_acts", spy)
    res = run_probe(small_study.load("retrain"), retain, forget, layers=[0, 1])
    assert not set(seen[0]) & forget_prompts  # the training call saw retain prompts only
    assert not set(res.train_ids) & {s.id for s in forget}
    with pytest.raises(AnalysisInputError, match="both the forget and the retain"):
        probe_training_set([*retain, forget[0]], forget)


def test_bad_inputs(small_study, trained, tmp_path, monkeypatch):
    with pytest.raises(AnalysisInputError, match="out of range"):
        train_sae(small_study, SAEOptions(layer=99, steps=5))
    with pytest.raises(AnalysisInputError, match="out of range"):
        run_probe(small_study.load("original"), small_study.retain, small_study.forget, layers=[-1])
    with pytest.raises(AnalysisInputError, match="no SAE trained"):
        load_sae(small_study, layer=0, k=3)
    other = tmp_path / "other_sae"
    shutil.copytree(trained.path, other)
    meta = json.loads((other / META).read_text())
    meta["fingerprint"] = "0123456789abcdef"
    (other / META).write_text(json.dumps(meta))
    with pytest.raises(AnalysisInputError, match="fingerprint"):
        load_sae(small_study, path=other)
    with pytest.raises(AnalysisInputError, match="not the original"):
        restore(small_study, "original", trained=trained)
    with pytest.raises(AnalysisInputError, match="forget set is empty"):
        find_expert_features(small_study.load("original"), trained, [], small_study.retain)
    monkeypatch.setattr(type(small_study), "forget", property(lambda self: []))
    with pytest.raises(AnalysisInputError, match="forget set is empty"):
        restore(small_study, "npo", trained=trained)


def test_cli(small_study, trained, capsys):
    assert main(["sae", "train", str(small_study.root), "--steps", str(TEST_OPTS.steps), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"fvu", "l0", "dead_fraction", "retain_acc_spliced"} <= set(out) and out["layer"] == trained.layer
    assert main(["restore", str(small_study.root), "--model", "readout_suppression", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"verdict", "restoration_rate", "restoration_rate_net", "feature_retention", "probe_accuracy",
            "per_alpha", "per_sample"} <= set(out)
    assert out["verdict"] == "suppressed" and set(out["per_alpha"]) == {"1", "2", "5", "10"}
    assert out["reasons"] and out["probe_gap"] >= 0.25 and out["probe_gap_layer"] is not None
    assert main(["restore", str(small_study.root), "--model", "readout_suppression", "--alphas", "2,5"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("readout_suppression: SUPPRESSED (probe +") and "alpha    2:" in text
    assert main(["sae", "train", str(small_study.root), "--layer", "99", "--json"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_page(small_study, trained, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert "retrain" not in at.multiselect(key="sae_models").options  # the reference: never judged against itself
    at.multiselect(key="sae_models").set_value(["npo", "readout_suppression"]).run()
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # restoration vs alpha, expert-feature retention, probe accuracy by layer
    import json

    retention = json.loads(charts[1].proto.spec)["data"]
    assert {"npo", "readout_suppression", "retrain"} <= {x for t in retention for x in t.get("x", [])}
    md = " ".join(m.value for m in at.markdown)
    assert "erased" in md and "suppressed" in md
    at.number_input(key="sae_layer").set_value(0).run()  # no SAE there yet: asks to train, no error
    assert not at.exception and not at.error


def test_seed_table_reports_every_model_and_checks_the_controls(small_study, trained):
    from benchmarks import sae_seeds

    sae, rows = sae_seeds.seed_table(small_study, TEST_OPTS)
    assert sae.path == trained.path
    retrains = ["zoo_retrain_1", "zoo_retrain_2", "zoo_retrain_3"]  # other seeds: the reference is not judged
    assert [r["model"] for r in rows] == [n for n in small_study.model_names if n not in ("original", "retrain")] + \
        retrains
    by = {r["model"]: r for r in rows}
    assert all(by[n]["expected"] == "erased" and by[n]["verdict"] == "erased" for n in retrains)
    assert any(by[n]["probe_gap"] != 0.0 for n in retrains)  # not the control against itself
    assert by["readout_suppression"]["probe_gap"] >= 0.25
    assert sum(by["npo"]["per_sample"].values()) == len(small_study.forget)
    assert sae_seeds.controls_pass(rows)
    health = [{"seed": 0, "study": str(small_study.root), **sae.summary()}]
    assert "**PASS**" in sae_seeds.markdown(health, rows)
    flipped = [{**r, "verdict": "inconclusive"} if r["model"] == "zoo_retrain_2" else r for r in rows]
    assert not sae_seeds.controls_pass(flipped)
    assert "**FAIL**" in sae_seeds.markdown(health, flipped) and "✗ (want erased)" in sae_seeds.markdown(health, flipped)
