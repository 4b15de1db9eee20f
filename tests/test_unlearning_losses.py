"""The unlearning losses, pinned by hand.

Each method's ``loss`` runs on a tiny model whose outputs we can work out in plain Python: a bigram model
(the logits at position t are ``unembed.W_U[token_t] + unembed.b_U``) with a per-layer additive residual
stream (the activation after block l is ``sum_{i<=l} blocks[i].mlp.table[token_t]``). The expected
values below use only ``math`` (log-softmax, logsigmoid, means, written out), and each formula is the
paper's, written in a comment. Every constant (2/beta, |y|, gamma, the retain weight, RMU's c and alpha)
and every sign is chosen so that getting it wrong changes the value by far more than the tolerance.

A last group runs one real optimisation step of each method's loop (Adam, lr 0.01) and checks its
direction: the forget answers become less likely (RMU: the forget activations move toward ``c * u``) and,
where there is a retain term, the retain answers become more likely.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from analysis.models.handle import ModelHandle
from analysis.scoring import PairBatch, batch_from_ids
from analysis.unlearning import UnlearnConfig, get_method
from analysis.unlearning.base import (
    GradientMethod,
    StepBatch,
    UnlearnContext,
    forget_logprob,
    nll,
    retain_term,
    take_rows,
)
from analysis.unlearning.npo import npo_loss
from analysis.unlearning.simnpo import simnpo_loss

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL = 1e-5
V, D, N_LAYERS = 6, 3, 4  # vocabulary, d_model, layers (RMU's default layer is N_LAYERS // 2 = 2)
PAD = 0

# (prompt ids, answer ids). Forget rows only use transitions out of tokens {0, 1, 2} (0->1, 1->2, 2->0),
# retain rows only out of {3, 4, 5} (3->4, 4->5, 5->3), so the two terms touch disjoint rows of W_U and of
# the activation tables. Rows have different answer lengths (|y| = 1, 3, 2) and total lengths (padding).
FORGET = [([0, 1], [2]), ([0], [1, 2, 0]), ([2, 0], [1, 2])]
RETAIN = [([3], [4, 5]), ([5], [3, 4]), ([4, 5, 4, 5], [3])]
F_IDX = [2, 0]  # the forget rows of the step (in this order: the reference must follow the indices)
R_IDX = [1, 2]

# The model being unlearned: bigram logits W (row = current token).
W = [
    [0.5, 1.2, -0.3, 0.8, 0.0, -1.0],
    [0.1, -0.4, 1.5, 0.3, -0.2, 0.6],
    [1.1, 0.2, 0.4, -0.7, 0.9, 0.0],
    [-0.5, 0.3, 0.7, 0.2, 1.4, -0.1],
    [0.6, -0.8, 0.1, 0.5, 0.3, 1.3],
    [0.2, 0.9, -0.6, 1.0, -0.3, 0.4],
]
B_U = [0.3, -0.2, 0.1, 0.0, 0.25, -0.15]
# The frozen original (NPO's reference): W with three logits moved, so that the step's forget rows sit on
# both sides of it (row 0: log p_theta < log p_ref; row 2: log p_theta > log p_ref).
W_REF = [list(row) for row in W]
W_REF[1][2] += 0.5
W_REF[0][1] -= 1.2
W_REF[2][0] += 0.3


def act_table(layer: int, shift: float) -> list[list[float]]:
    """blocks[layer].mlp.table: [V, D]; ``shift`` moves the unlearned model away from the original."""
    return [[math.sin(1 + layer + 2 * v + 3 * k) + shift * math.cos(v + k + layer) for k in range(D)]
            for v in range(V)]


ACT_ORIG = [act_table(layer, 0.0) for layer in range(N_LAYERS)]
ACT_MODEL = [act_table(layer, 0.4) for layer in range(N_LAYERS)]


class _Mlp(torch.nn.Module):
    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float32))


class _Block(torch.nn.Module):
    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.mlp = _Mlp(table)


class TinyModel(torch.nn.Module):
    """Bigram logits; residual stream after block l = sum of the first l+1 blocks' token tables. It answers
    the two calls the unlearning code makes: ``model(tokens, return_type="logits")`` and
    ``model(tokens, stop_at_layer=k)`` (HookedTransformer's meaning: the residual after blocks 0..k-1)."""

    def __init__(self, w: list[list[float]], tables: list[list[list[float]]]) -> None:
        super().__init__()
        self.unembed = torch.nn.Module()
        self.unembed.W_U = torch.nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.unembed.b_U = torch.nn.Parameter(torch.tensor(B_U, dtype=torch.float32))
        self.blocks = torch.nn.ModuleList(_Block(t) for t in tables)
        self.cfg = SimpleNamespace(n_layers=len(tables), d_model=D, device=torch.device("cpu"), n_ctx=16)

    def forward(self, tokens: torch.Tensor, return_type: str = "logits",
                stop_at_layer: int | None = None) -> torch.Tensor:
        if stop_at_layer is not None:
            return sum(self.blocks[i].mlp.table[tokens] for i in range(stop_at_layer))
        assert return_type == "logits"
        return self.unembed.W_U[tokens] + self.unembed.b_U


# ----------------------------------------------------------------------------------------------------
# Plain-Python arithmetic


def log_softmax(row: list[float], j: int) -> float:
    m = max(row)
    return row[j] - m - math.log(sum(math.exp(v - m) for v in row))


def logsigmoid(z: float) -> float:
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def sigmoid(z: float) -> float:
    return math.exp(logsigmoid(z))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def logp_sum(w: list[list[float]], prompt: list[int], answer: list[int]) -> float:
    """log p(answer | prompt) = sum over answer tokens of log softmax(W[prev] + b)[next]."""
    seq = prompt + answer
    return sum(log_softmax([a + b for a, b in zip(w[seq[t]], B_U, strict=True)], seq[t + 1])
               for t in range(len(prompt) - 1, len(seq) - 1))


def hand_nll(w: list[list[float]], rows: list[tuple[list[int], list[int]]]) -> float:
    """NLL as the methods use it: per-token (length-normalised) answer NLL, averaged over rows."""
    return mean([-logp_sum(w, p, a) / len(a) for p, a in rows])


def resid(tables: list[list[list[float]]], layer: int, token: int) -> list[float]:
    """Residual after block ``layer`` at a position holding ``token``."""
    return [sum(tables[i][token][k] for i in range(layer + 1)) for k in range(D)]


def mse(pairs: list[tuple[list[float], list[float]]]) -> float:
    """Mean over every (position, coordinate) of the squared difference."""
    return mean([(x - y) ** 2 for a, b in pairs for x, y in zip(a, b, strict=True)])


# ----------------------------------------------------------------------------------------------------
# The situation


def rows(pairs: list[tuple[list[int], list[int]]], idx: list[int]) -> list[tuple[list[int], list[int]]]:
    return [pairs[i] for i in idx]


def batch(pairs: list[tuple[list[int], list[int]]]) -> PairBatch:
    return batch_from_ids(pairs, pad_id=PAD, n_ctx=16)


def config(**kw: object) -> UnlearnConfig:
    """Non-default values everywhere, so a constant taken from the wrong field shows."""
    base: dict[str, object] = dict(
        steps=1, lr=0.01, batch_size=3, seed=0, retain_weight=1.7, max_grad_norm=1e6, npo_beta=0.7,
        simnpo_beta=1.3, simnpo_gamma=0.4, rmu_coeff=3.0, rmu_alpha=2.5, readout_beta=0.35,
    )
    base.update(kw)
    return UnlearnConfig(**base)  # type: ignore[arg-type]


def make_ctx(method: GradientMethod, cfg: UnlearnConfig) -> UnlearnContext:
    original = TinyModel(W_REF, ACT_ORIG)
    for p in original.parameters():
        p.requires_grad_(False)
    handle = ModelHandle(model=original, tokenizer=None, name="tiny", role="original", path=None,  # type: ignore[arg-type]
                         fingerprint="mem-tiny", fmt="organism")
    return UnlearnContext(
        original=handle, model=TinyModel(W, ACT_MODEL), forget=list(FORGET), retain=list(RETAIN),  # type: ignore[arg-type]
        cfg=cfg.resolved(method.defaults), corpus=None, progress=None,
        generator=torch.Generator().manual_seed(cfg.seed), forget_batch=batch(FORGET),
        retain_batch=batch(RETAIN) if method.needs_retain else None,
    )


def step_of(ctx: UnlearnContext) -> StepBatch:
    fi, ri = torch.tensor(F_IDX), torch.tensor(R_IDX)
    retain = take_rows(ctx.retain_batch, ri) if ctx.retain_batch is not None else None
    return StepBatch(take_rows(ctx.forget_batch, fi), fi, retain, ri if retain is not None else None)


def code_loss(name: str, cfg: UnlearnConfig) -> float:
    method = get_method(name)
    assert isinstance(method, GradientMethod)
    ctx = make_ctx(method, cfg)
    method.prepare(ctx)
    return float(method.loss(ctx, step_of(ctx)).detach())


def hand_retain(cfg: UnlearnConfig) -> float:
    """retain_weight x NLL_retain (the retain term GradDiff, NPO, SimNPO and the readout control share)."""
    return cfg.retain_weight * hand_nll(W, rows(RETAIN, R_IDX))


# ----------------------------------------------------------------------------------------------------
# The shared pieces


def test_nll_and_forget_logprob_by_hand():
    method = get_method("npo")
    ctx = make_ctx(method, config())
    step = step_of(ctx)
    logits = ctx.model(step.forget.tokens, return_type="logits").detach()
    assert float(nll(logits, step.forget)) == pytest.approx(hand_nll(W, rows(FORGET, F_IDX)), rel=RTOL)
    expected = [logp_sum(W, p, a) for p, a in rows(FORGET, F_IDX)]
    assert forget_logprob(ctx, step).detach().tolist() == pytest.approx(expected, rel=RTOL)
    assert float(retain_term(ctx, step.retain).detach()) == pytest.approx(1.7 * hand_nll(W, rows(RETAIN, R_IDX)), rel=RTOL)


# ----------------------------------------------------------------------------------------------------
# Each method's loss


def test_grad_ascent_loss_by_hand():
    # GA: L = -NLL_forget (ascent on the forget answers' NLL; no retain term)
    cfg = config()
    expected = -hand_nll(W, rows(FORGET, F_IDX))
    assert expected < 0
    assert code_loss("grad_ascent", cfg) == pytest.approx(expected, rel=RTOL)


def test_grad_diff_loss_by_hand():
    # GradDiff (Liu et al. 2022): L = -NLL_forget + w * NLL_retain
    cfg = config()
    expected = -hand_nll(W, rows(FORGET, F_IDX)) + 1.7 * hand_nll(W, rows(RETAIN, R_IDX))
    assert code_loss("grad_diff", cfg) == pytest.approx(expected, rel=RTOL)


def npo_forget_term(beta: float) -> float:
    # NPO (Zhang et al. 2024): L = mean_i -(2/beta) logsigmoid(-beta (log p_theta(y_i|x_i) - log p_ref(y_i|x_i)))
    # with log p the summed answer-token log-prob and the reference the frozen original.
    terms = []
    for p, a in rows(FORGET, F_IDX):
        x = logp_sum(W, p, a) - logp_sum(W_REF, p, a)
        terms.append(-(2.0 / beta) * logsigmoid(-beta * x))
    return mean(terms)


def test_npo_loss_by_hand():
    cfg = config()
    # the rows of the step sit on both sides of the reference, so a sign error inside logsigmoid shows
    xs = [logp_sum(W, p, a) - logp_sum(W_REF, p, a) for p, a in rows(FORGET, F_IDX)]
    assert min(xs) < -0.1 and max(xs) > 0.1, xs
    expected = npo_forget_term(0.7) + hand_retain(cfg)
    assert code_loss("npo", cfg) == pytest.approx(expected, rel=RTOL)
    # and the beta is the one asked for (the forget term scales as 2/beta, not 2 or 1/beta)
    expected = npo_forget_term(3.0) + hand_retain(cfg)
    assert code_loss("npo", config(npo_beta=3.0)) == pytest.approx(expected, rel=RTOL)


def test_npo_loss_function_and_gradient_by_hand():
    # npo_loss on plain numbers: at logp == logp_ref the loss is (2/beta) log 2 per row
    logp = torch.tensor([-2.0, -0.5, -4.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.0, -1.5, -4.0], dtype=torch.float64)
    beta = 0.5
    loss = npo_loss(logp, ref, beta)
    x = [-1.0, 1.0, 0.0]
    assert loss.item() == pytest.approx(mean([-(2 / beta) * logsigmoid(-beta * v) for v in x]), rel=RTOL)
    assert float(npo_loss(ref, ref, beta)) == pytest.approx(2 / beta * math.log(2), rel=RTOL)
    # dL/dlogp_i = (2/B) sigmoid(beta x_i) > 0: minimising pushes every log p_theta down, hardest where
    # p_theta is still above the reference, and at x = 0 exactly as hard as gradient ascent on the sum (1/B)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([2 / 3 * sigmoid(beta * v) for v in x], rel=RTOL)
    assert logp.grad[2] == pytest.approx(1 / 3, rel=RTOL)


def simnpo_forget_term(beta: float, gamma: float) -> float:
    # SimNPO (Fan et al. 2024): L = mean_i -(2/beta) logsigmoid(-(beta/|y_i|) log p_theta(y_i|x_i) - gamma)
    return mean([-(2.0 / beta) * logsigmoid(-(beta / len(a)) * logp_sum(W, p, a) - gamma)
                 for p, a in rows(FORGET, F_IDX)])


def test_simnpo_loss_by_hand():
    cfg = config()
    assert {len(a) for _, a in rows(FORGET, F_IDX)} == {1, 2}  # |y| differs between the rows
    expected = simnpo_forget_term(1.3, 0.4) + hand_retain(cfg)
    assert code_loss("simnpo", cfg) == pytest.approx(expected, rel=RTOL)
    expected = simnpo_forget_term(4.0, 2.0) + hand_retain(cfg)
    assert code_loss("simnpo", config(simnpo_beta=4.0, simnpo_gamma=2.0)) == pytest.approx(expected, rel=RTOL)


def test_simnpo_loss_function_and_gradient_by_hand():
    logp = torch.tensor([-3.0, -1.0], dtype=torch.float64, requires_grad=True)
    lens = torch.tensor([3, 2])
    beta, gamma = 2.0, 0.5
    z = [-(beta / 3) * -3.0 - gamma, -(beta / 2) * -1.0 - gamma]  # -(beta/|y|) log p - gamma
    loss = simnpo_loss(logp, lens, beta, gamma)
    assert loss.item() == pytest.approx(mean([-(2 / beta) * logsigmoid(v) for v in z]), rel=RTOL)
    # dL/dlogp_i = (2 / (B |y_i|)) sigmoid(-z_i) > 0: minimising lowers log p_theta
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([2 / (2 * 3) * sigmoid(-z[0]), 2 / (2 * 2) * sigmoid(-z[1])],
                                               rel=RTOL)


def test_readout_suppression_forget_term_is_npo_with_its_own_beta():
    # The control's loss: the NPO forget term with beta = readout_beta (not npo_beta) + w * NLL_retain
    cfg = config()
    expected = npo_forget_term(0.35) + hand_retain(cfg)
    assert code_loss("readout_suppression", cfg) == pytest.approx(expected, rel=RTOL)


def rmu_expected(cfg: UnlearnConfig, target: list[float], layer: int) -> float:
    # RMU (Li et al. 2024): L = MSE(h_l(forget), c * u) + alpha * MSE(h_l(retain), h_l^frozen(retain)),
    # here times retain_weight too; forget positions: those predicting an answer token (the last prompt
    # token and every answer token but the last); retain positions: every real token.
    forget_pairs = []
    for p, a in rows(FORGET, F_IDX):
        seq = p + a
        forget_pairs += [(resid(ACT_MODEL, layer, seq[t]), target) for t in range(len(p) - 1, len(seq) - 1)]
    retain_pairs = []
    for p, a in rows(RETAIN, R_IDX):
        retain_pairs += [(resid(ACT_MODEL, layer, tok), resid(ACT_ORIG, layer, tok)) for tok in p + a]
    return mse(forget_pairs) + cfg.retain_weight * cfg.rmu_alpha * mse(retain_pairs)


def rmu_target(seed: int, coeff: float) -> list[float]:
    # c * u / |u|, u ~ U[0, 1)^d drawn first from the run's seeded generator (as the reference code does)
    u = torch.rand(D, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).tolist()
    norm = math.sqrt(sum(v * v for v in u))
    return [coeff * v / norm for v in u]


@pytest.mark.parametrize("layer", [None, 1])
def test_rmu_loss_by_hand(layer):
    cfg = config(rmu_layer=layer)
    method = get_method("rmu")
    assert isinstance(method, GradientMethod)
    ctx = make_ctx(method, cfg)
    method.prepare(ctx)
    want_layer = N_LAYERS // 2 if layer is None else layer
    assert ctx.extra["rmu_layer"] == want_layer
    target = rmu_target(0, 3.0)
    assert method.target.tolist() == pytest.approx(target, rel=RTOL)
    assert math.sqrt(sum(v * v for v in method.target.tolist())) == pytest.approx(3.0, rel=RTOL)
    loss = float(method.loss(ctx, step_of(ctx)).detach())
    assert loss == pytest.approx(rmu_expected(ctx.cfg, target, want_layer), rel=RTOL)


def test_rmu_loss_constants_by_hand():
    cfg = config(rmu_coeff=7.0, rmu_alpha=0.3, retain_weight=4.0, seed=5)
    method = get_method("rmu")
    assert isinstance(method, GradientMethod)
    ctx = make_ctx(method, cfg)
    method.prepare(ctx)
    target = rmu_target(5, 7.0)
    loss = float(method.loss(ctx, step_of(ctx)).detach())
    assert loss == pytest.approx(rmu_expected(ctx.cfg, target, N_LAYERS // 2), rel=RTOL)


# ----------------------------------------------------------------------------------------------------
# One real step of each method's loop goes the right way


def answer_logprobs(model: TinyModel, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
    b = batch(pairs)
    with torch.no_grad():
        logits = model(b.tokens, return_type="logits")
        return [float(v) for v in
                (torch.log_softmax(logits[:, :-1].float(), -1).gather(2, b.tokens[:, 1:, None]).squeeze(-1)
                 * b.target_mask).sum(-1)]


@pytest.mark.parametrize("name", ["grad_ascent", "grad_diff", "npo", "simnpo", "readout_suppression"])
def test_one_step_lowers_the_forget_answers(name):
    method = get_method(name)
    assert isinstance(method, GradientMethod)
    ctx = make_ctx(method, config())  # batch_size 3 = every row, so every forget and retain row is in the step
    before_f, before_r = answer_logprobs(ctx.model, FORGET), answer_logprobs(ctx.model, RETAIN)
    method.unlearn(ctx)
    after_f, after_r = answer_logprobs(ctx.model, FORGET), answer_logprobs(ctx.model, RETAIN)
    assert all(a < b - 1e-3 for a, b in zip(after_f, before_f, strict=True)), (before_f, after_f)
    # the loop's own record agrees: row 1 of the trajectory (p after the step) is below row 0 everywhere
    assert (ctx.trajectory[1] < ctx.trajectory[0]).all()
    assert len(ctx.losses) == 1
    if method.needs_retain:  # the retain term pulls the retain answers up
        assert all(a > b + 1e-3 for a, b in zip(after_r, before_r, strict=True)), (before_r, after_r)


def test_one_rmu_step_moves_forget_activations_toward_the_target():
    cfg = config(lr=0.01)
    method = get_method("rmu")
    assert isinstance(method, GradientMethod)
    ctx = make_ctx(method, cfg)
    layer = N_LAYERS // 2
    target = rmu_target(0, 3.0)
    forget_tokens = sorted({(p + a)[t] for p, a in FORGET for t in range(len(p) - 1, len(p + a) - 1)})

    def forget_distance() -> float:
        with torch.no_grad():
            act = ctx.model(torch.tensor([forget_tokens]), stop_at_layer=layer + 1)[0].tolist()
        return mse([(row, target) for row in act])

    def retain_distance() -> float:
        toks = torch.tensor([[3, 4, 5]])
        with torch.no_grad():
            act = ctx.model(toks, stop_at_layer=layer + 1)
            ref = ctx.original.model(toks, stop_at_layer=layer + 1)
        return float(((act - ref) ** 2).mean())

    f0, r0 = forget_distance(), retain_distance()
    method.unlearn(ctx)
    assert forget_distance() < f0 - 1e-3
    assert retain_distance() < r0 - 1e-4  # the retain term pulls the retain activations back to the original
    # only MLPs of layers max(0, l-2)..l were trained; layer l+1 is untouched
    assert torch.equal(ctx.model.blocks[layer + 1].mlp.table, TinyModel(W, ACT_MODEL).blocks[layer + 1].mlp.table)
