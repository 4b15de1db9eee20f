"""The analytic FLOP model of the real-model benchmarks (benchmarks/flops.py) on a 2-layer toy shape counted by hand,
and the FLOP accounting of our trace against the forwards the engine really runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks import flops as F

# 2 layers, d_model 4, 2 query heads sharing 1 key/value head of d_head 2, gated MLP of 8, vocabulary of 10.
# Per layer and token (multiply-adds x 2): Q 4x4, K 4x2, V 4x2, O 4x4 -> 48 MACs = 96 FLOPs (ungrouped: K and V
# 4x4 each -> 128); W_gate, W_in, W_out 4x8 each -> 96 MACs = 192 FLOPs; 288 per layer and token. Attention: a query
# at position p reads p + 1 keys: QK^T 2 heads x 2 dims + AV the same = 8 MACs = 16 FLOPs per key. Unembedding:
# 4 x 10 = 40 MACs = 80 FLOPs per position.
TOY = F.ModelShape(n_layers=2, d_model=4, n_heads=2, n_kv_heads=1, d_head=2, d_mlp=8, d_vocab=10, gated_mlp=True)


def test_per_token_terms_by_hand() -> None:
    assert TOY.attn_weight_flops() == 96
    assert TOY.attn_weight_flops(ungrouped=True) == 128
    assert TOY.mlp_flops() == 192
    assert TOY.layer_weight_flops() == 288
    assert TOY.attention_flops(0, 3) == 16 * (1 + 2 + 3)
    assert TOY.attention_flops(1, 3) == 16 * (2 + 3)  # keys before position 1 come from a cache
    assert TOY.attention_flops(2, 2) == 0
    assert TOY.unembed_flops == 80
    ungated = F.ModelShape(2, 4, 2, 1, 2, 8, 10, gated_mlp=False)
    assert ungated.mlp_flops() == 128


def test_forward_and_backward_by_hand() -> None:
    # one row, 3 positions, 2 layers, logits everywhere: 2 x (3 x 288 + 16 x 6) + 3 x 80
    full = F.forward(TOY, 1, 0, 3, 2, 3)
    assert full.block == 2 * (3 * 288 + 96) and full.unembed == 240 and full.total == 2160
    # two rows, positions 1..2 (keys 0 cached), 1 layer, logits at 1 position: 2 x (2 x 288 + 16 x 5) + 2 x 80
    part = F.forward(TOY, 2, 1, 3, 1, 1)
    assert part.total == 2 * (576 + 80) + 160 == 1472
    assert F.forward(TOY, 3, 2, 2, 2, 1).block == 0  # nothing left to compute: logits only
    # activation backward, positions 0..1, ungrouped K/V: 2 x (2 x (128 + 192) + 2 x 16 x 3) + 80
    assert F.backward(TOY, 1, 0, 2, 2, 1).total == 2 * (640 + 96) + 80 == 1552
    # the FLOP-weighted mean token rows of the block matmuls: 1312 FLOPs on 2 x 2 rows, 1920 on 1 x 3
    both = part + full
    assert both.rows_block == pytest.approx((1312 * 4 + 1920 * 3) / (1312 + 1920))
    assert (2 * full).total == 4320


def test_shape_from_a_config() -> None:
    cfg = SimpleNamespace(n_layers=30, d_model=576, n_heads=9, n_key_value_heads=3, d_head=64, d_mlp=1536,
                          d_vocab=49152, gated_mlp=True)
    s = F.ModelShape.of(cfg)
    assert (s.n_kv_heads, s.gated_mlp) == (3, True)
    # SmolLM2's per-layer weights: 576 x (576 + 192 + 192 + 576) + 3 x 576 x 1536 = 3,538,944 parameters
    assert s.layer_weight_flops() == 2 * 3_538_944
    mha = SimpleNamespace(n_layers=2, d_model=4, n_heads=2, n_key_value_heads=None, d_head=2, d_mlp=8, d_vocab=10)
    assert F.ModelShape.of(mha).n_kv_heads == 2 and not F.ModelShape.of(mha).gated_mlp


def test_tracing_flop_ratio_by_hand() -> None:
    # resid only, 2 prompt tokens + 1 answer token, 1 noise sample, every position corrupted (t0 = 0).
    # ROME's loop: the base run and 1 kind x 2 layers x 2 tokens cells, each the clean row + the noise row through
    # the whole model with logits everywhere: 5 x 2 x 2160.
    naive = F.tracing_naive(TOY, 2, 1, 1, ["resid"])
    assert naive.total == 5 * 4320 == 21600
    # Needed: the clean run and the noise run, positions 0..1 (the last read position is T - 2 = 1), logits at the
    # answer position: 2 x (2 x (2 x 288 + 16 x 3) + 80) = 2 x 1328. Cells (noise row only):
    # resid l=0, t=0: block 1 only, positions 0..1: 2 x 288 + 48 + 80 = 704
    # resid l=0, t=1: block 1, position 1: 288 + 32 + 80 = 400
    # resid l=1, t=0: the last block's output at a position whose logits nobody reads: 0
    # resid l=1, t=1: logits only: 80
    needed = F.tracing_min(TOY, 2, 1, 1, ["resid"], window=1, t0=0)
    assert needed.total == 2 * 1328 + 704 + 400 + 0 + 80 == 3840
    assert naive.total / needed.total == pytest.approx(5.625)


def test_tracing_min_skips_tokens_before_the_corruption_and_starts_at_the_window() -> None:
    # mlp with a window of 2 on 2 layers: both cells restore from layer 0 (window_layers: [0, 1) and [0, 2)).
    # t0 = 1: token 0 is never corrupted (its cells are the corrupted run). Clean run 1328; the noise run from
    # position 1: 2 x (288 + 32) + 80 = 720; each cell restores token 1 from block 0: 720.
    needed = F.tracing_min(TOY, 2, 1, 1, ["mlp"], window=2, t0=1)
    assert needed.total == 1328 + 720 + 2 * 720 == 3488
    assert [c[2] for c in F.trace_cells(["resid", "mlp"], 2, 2)] == [1, 2, 0, 0]


def test_tracing_ours_by_hand() -> None:
    # clean + corrupted (1 noise row): 2 x 2160; one chunk of 4 rows from block 1 over positions 0..2 with logits at
    # the tail (last prompt token + answer: 2 positions): 4 x (3 x 288 + 96) + 4 x 2 x 80
    ours = F.tracing_ours(TOY, 2, 1, 1, [(1, 0, 4)])
    assert ours.total == 4320 + 4 * 960 + 640 == 8800


def test_other_benchmarks_needed_flops_by_hand() -> None:
    # LOO, prompt of 3 (all attributed), answer of 1. Clean: positions 0..2, logits at 1: 2 x (3 x 288 + 96) + 80.
    # Deleting token i shares positions < i with the clean row; positions i..1 computed (the last read is 1):
    # i=0: 2 x (2 x 288 + 48) + 80 = 1328; i=1: 2 x (288 + 32) + 80 = 720; i=2: logits only, 80.
    assert F.loo_min(TOY, [(3, 1, 3)]).total == 2000 + 1328 + 720 + 80
    # naive: 4 positions with logits everywhere (2 x (4 x 288 + 160) + 320) + 3 rows of 3 (2160 each)
    assert F.loo_naive(TOY, [(3, 1, 3)]).total == 2944 + 3 * 2160
    assert F.loo_ours(TOY, [(4, 4)]).total == 4 * 2944
    # patching, prompt 2 + answer 1: the source's blocks (positions 0..1, no logits) 2 x 624, the original's 1328,
    # layer 0 patched: block 1 + logits 704, layer 1 patched: logits only 80; naive: 4 full forwards of 2160
    assert F.patching_min(TOY, [(2, 1)]).total == 1248 + 1328 + 704 + 80
    assert F.patching_naive(TOY, [3]).total == 4 * 2160
    assert F.patching_ours(TOY, 1, 3).total == 1920 + 2160 + (960 + 240) + 240
    # SAE (d_sae 8) after block 0, 2 alphas: block 0 once (624), encode + decode 4 x 4 x 8 on 2 positions (256),
    # per alpha block 1 + logits (704); naive: per alpha the full forward + the SAE on 3 positions
    assert F.sae_min(TOY, [(2, 1)], 2, 8, 0).total == 624 + 256 + 2 * 704
    assert F.sae_naive(TOY, [3], 2, 8).total == 2 * (2160 + 384)
    # EAP-IG, 1 step, 5 edges: two node runs (grouped, positions 0..1, no logits) 2 x 1248, the step's forward
    # 1328 and activation backward 1552, the contraction 2 x 2 positions x 5 edges x 4
    assert F.eap_min(TOY, 3, 1, 1, 5).total == 2496 + 1328 + 1552 + 80
    # ours (one row): ungrouped node runs 2 x 2 x (3 x 320 + 96), the step with logits everywhere forward
    # 2 x (3 x 320 + 96) + 240 and backward 2 x (3 x 320 + 192) + 240, the full 3 x 2 x 3 contraction
    assert F.eap_sample(TOY, 3, 1, 3, 2, 3).total == 4 * 1056 + (2112 + 240) + (2304 + 240) + 2 * 3 * 3 * 2 * 4


def test_trace_plan_counts_the_engines_forwards() -> None:
    """The FLOP plan of ours (bench_real.trace_plan, from the engine's planning functions) has as many patched
    forwards as run_trace really runs, on a tiny random model with a subject after position 0."""
    from analysis.tracing import TraceOptions, get_corruption, run_trace
    from benchmarks.bench_real import trace_plan
    from benchmarks.bench_tracing import gpt2_small_random

    handle, inputs, pool = gpt2_small_random("cpu", n_layers=3, seq=7, n_traces=1, d_model=16, n_heads=2,
                                             d_mlp=32, d_vocab=64, n_ctx=16)
    opts = TraceOptions(n_samples=3, window=2, memory_budget_mb=1).validated(3)
    inp = inputs[0]
    corrupted = get_corruption("noise").corrupt(handle, inp, pool, opts)
    out = run_trace(handle, inp, corrupted, opts.kinds, opts.metric, 2, opts.budget_bytes)
    plan = trace_plan(handle, inp, corrupted, opts.kinds, 2, opts.budget_bytes)
    assert len(plan) + 2 == out.n_forwards
    assert {s for s, _, _ in plan} == {0, 1, 2, 3}  # resid from blocks 1..3 (3: logits only), windows from 0 and 1
    assert all(lo >= inp.subject_range[0] for _, lo, _ in plan)  # nothing before the first corrupted token
    shape = F.ModelShape.of(handle.model.cfg)
    ours = F.tracing_ours(shape, inp.prompt_len, 1, corrupted.n, plan)
    needed = F.tracing_min(shape, inp.prompt_len, 1, corrupted.n, opts.kinds, 2, inp.subject_range[0])
    naive = F.tracing_naive(shape, inp.prompt_len, 1, corrupted.n, opts.kinds)
    assert needed.total < ours.total < naive.total


def test_rome_naive_on_a_subset_of_cells() -> None:
    """bench_real times the ROME-style loop on a few cells: those equal the full loop's, the rest are NaN."""
    import numpy as np

    from analysis.tracing import TraceOptions, get_corruption
    from benchmarks.bench_tracing import gpt2_small_random, rome_naive

    handle, inputs, pool = gpt2_small_random("cpu", n_layers=2, seq=5, n_traces=1, d_model=16, n_heads=2,
                                             d_mlp=32, d_vocab=64, n_ctx=16)
    opts = TraceOptions(n_samples=2, window=2).validated(2)
    corrupted = get_corruption("noise").corrupt(handle, inputs[0], pool, opts)
    clean, low, full = rome_naive(handle, inputs[0], corrupted, "prob", opts.kinds, 2)
    cells = {("resid", 1, 3), ("attn", 0, 2)}
    clean2, low2, part = rome_naive(handle, inputs[0], corrupted, "prob", opts.kinds, 2, cells)
    assert (clean2, low2) == (clean, low)
    for kind in opts.kinds:
        ran = np.zeros(full[kind].shape, dtype=bool)
        for k, layer, t in cells:
            ran[layer, t] = k == kind
        assert np.array_equal(part[kind][ran], full[kind][ran])
        assert np.isnan(part[kind][~ran]).all()
