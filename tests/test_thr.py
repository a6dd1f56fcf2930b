"""THR weighter: the definition (eq. (★) of shared/methods/thr.md, NTHR paper's alpha) against an independent
quadruple loop, the learning-dynamics property it is derived from, and the weighting rules."""

import pytest
import torch

from tokrl.weighting import TokenView, build_weighter
from tokrl.weighting.thr import (
    THR_COLUMN,
    WEIGHT_COLUMN,
    NTHRWeighter,
    THRWeighter,
    Unembedding,
    find_thr_weighter,
    token_hidden_rewards,
)

# ---- an independent reference, written from the definition -------------------------------------------------------


def reference_thr(ids, lengths, hidden, W, adv, temperature=1.0, vocab=None, include_self=True):
    """THR_{j,k'} = A_j sum_{i in P} sum_k <g_ik, g_jk'> <h_ik, h_jk'> by explicit loops, float64.

    ids/hidden are per-response lists; g = e_y - softmax(W h / T), restricted to `vocab` columns if given.
    """
    G = len(lengths)
    q = [[torch.softmax(W @ hidden[i][k] / temperature, -1) for k in range(lengths[i])] for i in range(G)]
    cols = vocab if vocab is not None else list(range(W.shape[0]))

    def g(i, k):
        onehot = torch.zeros(W.shape[0], dtype=torch.float64)
        onehot[ids[i][k]] = 1.0
        return (onehot - q[i][k])[cols]

    positive = [i for i in range(G) if adv[i] > 0]
    out = []
    for j in range(G):
        row = []
        for kp in range(lengths[j]):
            total = 0.0
            for i in positive:
                for k in range(lengths[i]):
                    if not include_self and (i, k) == (j, kp):
                        continue
                    alpha = float(g(i, k) @ g(j, kp))
                    total += alpha * float(hidden[i][k] @ hidden[j][kp])
            row.append(adv[j] * total)
        out.append(row)
    return out


def make_group(seed=0, lengths=(3, 2, 4, 3), V=6, d=3, adv=(1.0, 1.0, -1.0, -1.0)):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(V, d, generator=gen, dtype=torch.float64)
    ids = [torch.randint(0, V, (n,), generator=gen).tolist() for n in lengths]
    hidden = [torch.randn(n, d, generator=gen, dtype=torch.float64) for n in lengths]
    return W, ids, hidden, list(lengths), list(adv)


def pack(ids, hidden, lengths, extra_pad=0, pad_value=0.0):
    T = max(lengths) + extra_pad
    d = hidden[0].shape[1]
    B = len(lengths)
    cid = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    H = torch.full((B, T, d), pad_value, dtype=torch.float64)
    for i, n in enumerate(lengths):
        cid[i, :n] = torch.tensor(ids[i])
        mask[i, :n] = 1
        H[i, :n] = hidden[i]
    return cid, mask, H


def logps_of(W, cid, H, temperature=1.0):
    return torch.log_softmax(H @ W.T / temperature, -1).gather(-1, cid.unsqueeze(-1)).squeeze(-1)


def unembed(W, temperature=1.0):
    return Unembedding(rows=lambda ids: W[ids], vocab_size=W.shape[0], temperature=temperature)


def flat(values, lengths):
    return torch.cat([values[i, :n] for i, n in enumerate(lengths)])


# ---- the definition --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("with_logps", [True, False])
def test_factorised_equals_quadruple_loop_full_vocab(include_self, with_logps):
    W, ids, hidden, lengths, adv = make_group(seed=1)
    cid, mask, H = pack(ids, hidden, lengths)
    temperature = 0.7
    logps = logps_of(W, cid, H, temperature) if with_logps else None
    res = token_hidden_rewards(
        cid, mask, H, torch.tensor(adv), torch.zeros(4, dtype=torch.long), unembed(W, temperature), logps,
        restrict_vocab=False, include_self=include_self,
    )
    ref = reference_thr(ids, lengths, hidden, W, adv, temperature, include_self=include_self)
    expected = torch.tensor([x for row in ref for x in row], dtype=torch.float64)
    torch.testing.assert_close(flat(res.thr, lengths).double(), expected, rtol=1e-5, atol=1e-6)
    assert expected.abs().max() > 0.1  # a non-trivial example
    # s = THR / A
    torch.testing.assert_close(flat(res.s, lengths).double() * torch.tensor(
        [adv[i] for i, n in enumerate(lengths) for _ in range(n)], dtype=torch.float64), expected, rtol=1e-5, atol=1e-6)


def test_restricted_vocab_equals_loop_on_vstar():
    W, ids, hidden, lengths, adv = make_group(seed=2, V=9)
    cid, mask, H = pack(ids, hidden, lengths)
    res = token_hidden_rewards(
        cid, mask, H, torch.tensor(adv), torch.zeros(4, dtype=torch.long), unembed(W), logps_of(W, cid, H),
        restrict_vocab=True,
    )
    vstar = sorted({t for row in ids for t in row})
    assert len(vstar) < 9 and res.vstar == [len(vstar)]
    ref = reference_thr(ids, lengths, hidden, W, adv, vocab=vstar)
    torch.testing.assert_close(flat(res.thr, lengths).double(), torch.tensor([x for r in ref for x in r], dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_restricted_equals_full_when_vstar_is_whole_vocab():
    V = 5
    W, _, hidden, lengths, adv = make_group(seed=3, lengths=(4, 3, 3, 2), V=V)
    ids = [[0, 1, 2, 3], [4, 0, 1], [2, 2, 3], [4, 1]]  # every token id occurs
    cid, mask, H = pack(ids, hidden, lengths)
    args = (cid, mask, H, torch.tensor(adv), torch.zeros(4, dtype=torch.long), unembed(W), logps_of(W, cid, H))
    full = token_hidden_rewards(*args, restrict_vocab=False)
    restricted = token_hidden_rewards(*args, restrict_vocab=True)
    assert restricted.vstar == [V]
    torch.testing.assert_close(restricted.thr, full.thr, rtol=1e-6, atol=1e-7)
    assert full.thr.abs().sum() > 0


def test_groups_are_independent_and_padding_changes_nothing():
    W, ids, hidden, lengths, adv = make_group(seed=4)
    W2, ids2, hidden2, lengths2, adv2 = make_group(seed=5, lengths=(2, 5, 1, 3), adv=(-0.5, 1.5, -0.5, -0.5))
    cid, mask, H = pack(ids + ids2, hidden + hidden2, lengths + lengths2)
    gids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    A = torch.tensor(adv + adv2)
    both = token_hidden_rewards(cid, mask, H, A, gids, unembed(W), logps_of(W, cid, H))
    alone = token_hidden_rewards(cid[:4], mask[:4], H[:4], A[:4], gids[:4], unembed(W), logps_of(W, cid[:4], H[:4]))
    torch.testing.assert_close(both.thr[:4], alone.thr)
    # extra padded columns with garbage hidden states and pad ids change no value
    cidp, maskp, Hp = pack(ids + ids2, hidden + hidden2, lengths + lengths2, extra_pad=3, pad_value=7.0)
    cidp[maskp == 0] = 5
    padded = token_hidden_rewards(cidp, maskp, Hp, A, gids, unembed(W), logps_of(W, cidp, Hp))
    torch.testing.assert_close(padded.thr[:, : cid.shape[1]], both.thr)
    assert padded.thr[:, cid.shape[1]:].abs().sum() == 0
    assert padded.vstar == both.vstar


# ---- the defining property: first-order change of the correct responses' likelihood --------------------------


def correct_loglik(W, ids, hidden, positive):
    return sum(
        float(torch.log_softmax(W @ hidden[i][k], -1)[ids[i][k]]) for i in positive for k in range(len(ids[i]))
    )


def grad_logp(W, h, y):
    g = -torch.softmax(W @ h, -1)
    g[y] += 1.0
    return torch.outer(g, h)  # d log pi(y) / dW


def test_defining_property_whole_objective():
    W, ids, hidden, lengths, adv = make_group(seed=6)
    cid, mask, H = pack(ids, hidden, lengths)
    res = token_hidden_rewards(cid, mask, H, torch.tensor(adv), torch.zeros(4, dtype=torch.long), unembed(W),
                               logps_of(W, cid, H), restrict_vocab=False)
    eta = 1e-5
    step = sum(adv[j] * grad_logp(W, hidden[j][k], ids[j][k]) for j in range(4) for k in range(lengths[j]))
    positive = [i for i in range(4) if adv[i] > 0]
    delta = correct_loglik(W + eta * step, ids, hidden, positive) - correct_loglik(W, ids, hidden, positive)
    predicted = eta * float(res.thr.sum())
    assert abs(predicted) > 1e-6
    assert abs(delta - predicted) < 1e-3 * abs(predicted)


def test_defining_property_per_token():
    W, ids, hidden, lengths, adv = make_group(seed=7)
    cid, mask, H = pack(ids, hidden, lengths)
    res = token_hidden_rewards(cid, mask, H, torch.tensor(adv), torch.zeros(4, dtype=torch.long), unembed(W),
                               logps_of(W, cid, H), restrict_vocab=False)
    positive = [i for i in range(4) if adv[i] > 0]
    base = correct_loglik(W, ids, hidden, positive)
    eta = 1e-5
    signs = set()
    for j in range(4):
        for k in range(lengths[j]):
            W2 = W + eta * adv[j] * grad_logp(W, hidden[j][k], ids[j][k])
            delta = correct_loglik(W2, ids, hidden, positive) - base
            predicted = eta * float(res.thr[j, k])
            assert abs(delta - predicted) < 1e-3 * abs(predicted) + 1e-12, (j, k, delta, predicted)
            signs.add(predicted > 0)
    assert signs == {True, False}  # the example has tokens of both signs


# ---- weighting rules ---------------------------------------------------------------------------------------------


def two_response_view(p_adv=(0.7071, -0.7071)):
    """One correct and one incorrect one-token response with the same token and the same hidden state."""
    gen = torch.Generator().manual_seed(8)
    W = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    h = torch.randn(4, generator=gen, dtype=torch.float64)
    cid = torch.tensor([[3], [3]])
    H = torch.stack([h, h]).unsqueeze(1)
    view = TokenView(completion_ids=cid, completion_mask=torch.ones(2, 1, dtype=torch.long), hidden_states=H,
                     advantages=torch.tensor(p_adv), group_ids=torch.tensor([0, 0]), old_logps=logps_of(W, cid, H))
    return view, W, h


@pytest.mark.parametrize("p", [0.3, -0.4])
def test_two_response_example_gives_one_plus_and_minus_p(p):
    view, W, h = two_response_view()
    columns, res = THRWeighter(p=p, tau_beta=0.5).score(view, unembed(W))
    g_star = 1.0 - float(torch.softmax(W @ h, -1)[3])  # g restricted to V* = {3}
    s = g_star**2 * float(h @ h)
    torch.testing.assert_close(res.s[:, 0].double(), torch.tensor([s, s], dtype=torch.float64), rtol=1e-5, atol=0)
    assert res.thr[0, 0] > 0 > res.thr[1, 0]
    torch.testing.assert_close(columns[WEIGHT_COLUMN], torch.tensor([[1 + p], [1 - p]]))
    # with beta = 1, tau equals s exactly and the strict threshold |s| > tau keeps both tokens at weight 1
    columns, _ = THRWeighter(p=p, tau_beta=1.0).score(view, unembed(W))
    torch.testing.assert_close(columns[WEIGHT_COLUMN], torch.ones(2, 1))


def test_p_zero_degenerate_groups_and_mask_nondominant():
    W, ids, hidden, lengths, adv = make_group(seed=9)
    cid, mask, H = pack(ids, hidden, lengths)
    view = TokenView(completion_ids=cid, completion_mask=mask, hidden_states=H, advantages=torch.tensor(adv),
                     group_ids=torch.zeros(4, dtype=torch.long), old_logps=logps_of(W, cid, H))
    columns, res = THRWeighter(p=0.0).score(view, unembed(W))
    torch.testing.assert_close(columns[WEIGHT_COLUMN], mask.float())
    assert 0 < res.dominant.sum() < mask.sum()
    w, _ = THRWeighter(p=0.2, mask_nondominant=True).score(view, unembed(W))
    w = w[WEIGHT_COLUMN]
    expected = torch.where(res.dominant, 1 + 0.2 * torch.sign(res.thr), torch.zeros_like(res.thr)) * mask
    torch.testing.assert_close(w, expected.float())
    for degenerate in ([1.0] * 4, [0.0] * 4, [-1.0] * 4):
        view.advantages = torch.tensor(degenerate)
        columns, res = THRWeighter(p=0.5, mask_nondominant=True).score(view, unembed(W))
        assert res.thr.abs().sum() == 0 and not res.dominant.any() and res.taus == []
        torch.testing.assert_close(columns[WEIGHT_COLUMN], mask.float())


def test_tau_is_beta_times_min_mean_s_plus():
    W, ids, hidden, lengths, adv = make_group(seed=10)
    cid, mask, H = pack(ids, hidden, lengths)
    args = (cid, mask, H, torch.tensor(adv), torch.zeros(4, dtype=torch.long), unembed(W), logps_of(W, cid, H))
    res = token_hidden_rewards(*args, tau_beta=0.3)
    means = [float(res.s[i, : lengths[i]].mean()) for i in range(4) if adv[i] > 0]
    assert res.taus[0] == pytest.approx(0.3 * min(means), rel=1e-5)
    torch.testing.assert_close(res.dominant, (res.s.abs() > res.taus[0]) & mask.bool())
    on_thr = token_hidden_rewards(*args, tau_beta=0.3, tau_on="thr")
    assert on_thr.taus[0] == pytest.approx(0.3 * min(means) * 1.0, rel=1e-5)  # A+ = 1 here
    torch.testing.assert_close(on_thr.dominant, (on_thr.thr.abs() > on_thr.taus[0]) & mask.bool())


def test_nthr_preset_scales_penalty_of_incorrect_tokens_resembling_correct_ones():
    gen = torch.Generator().manual_seed(11)
    W = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    h = torch.randn(4, generator=gen, dtype=torch.float64)
    other = -h  # an incorrect token pointing away from the correct one
    cid = torch.tensor([[3], [3], [3], [2]])
    H = torch.stack([h, 1.5 * h, other, h]).unsqueeze(1)
    adv = torch.tensor([1.5, -0.5, -0.5, -0.5])  # one correct of four: p_x = 0.25, eta = 0.5
    view = TokenView(completion_ids=cid, completion_mask=torch.ones(4, 1, dtype=torch.long), hidden_states=H,
                     advantages=adv, group_ids=torch.zeros(4, dtype=torch.long), old_logps=logps_of(W, cid, H))
    columns, res = NTHRWeighter(tau_beta=1.0).score(view, unembed(W))
    assert res.s[1, 0] > res.taus[0] and res.s[2, 0] < 0
    w = columns[WEIGHT_COLUMN][:, 0]
    assert w[0] == 1.0 and w[1] == pytest.approx(0.5) and w[2] == 1.0
    assert w[3] == (0.5 if res.s[3, 0] > res.taus[0] else 1.0)


def test_unembedding_transform_bias_scale_softcap():
    gen = torch.Generator().manual_seed(12)
    W = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(7, generator=gen, dtype=torch.float64)
    h = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    u = Unembedding(rows=lambda i: W[i], vocab_size=7, bias=lambda i: b[i], temperature=0.5, logit_scale=2.0, softcap=3.0)
    expected = 3.0 * torch.tanh(2.0 * (h @ W.T + b) / 3.0) / 0.5
    torch.testing.assert_close(u.logits(h, torch.arange(7)).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(u.logsumexp(h, chunk=3).double(), torch.logsumexp(expected, -1), rtol=1e-5, atol=1e-5)


# ---- the weighter at loss time, the registry, composition -----------------------------------------------------


def test_weigh_returns_stored_columns_and_exposes_thr():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    w = torch.tensor([[1.2, 0.8, 0.0], [1.0, 0.0, 0.0]])
    thr = torch.tensor([[0.5, -0.1, 0.0], [0.0, 0.0, 0.0]])
    view = TokenView(completion_ids=torch.zeros(2, 3, dtype=torch.long), completion_mask=mask,
                     columns={WEIGHT_COLUMN: w, THR_COLUMN: thr})
    out = THRWeighter(p=0.2)(view)
    torch.testing.assert_close(out, w)
    assert view.values["thr"] is thr
    assert view.stats["thr_positive_frac"] == pytest.approx(1 / 3)
    with pytest.raises(KeyError, match="tokrl_thr_weight.*THRGRPOTrainer"):
        THRWeighter()(TokenView(completion_ids=torch.zeros(1, 1, dtype=torch.long),
                                completion_mask=torch.ones(1, 1)))


def test_registry_validation_and_composition():
    w = build_weighter({"name": "thr", "p": -0.2, "tau_beta": 0.5})
    assert isinstance(w, THRWeighter) and w.p == -0.2 and w.tau_beta == 0.5
    assert isinstance(build_weighter("nthr"), NTHRWeighter)
    composed = build_weighter({"name": "product", "weighters": [{"name": "entropy_quantile", "rho": 0.2}, {"name": "thr", "p": 0.3}]})
    assert find_thr_weighter(composed).p == 0.3
    assert set(composed.all_columns()) == {WEIGHT_COLUMN, THR_COLUMN}
    assert find_thr_weighter(build_weighter("uniform")) is None
    with pytest.raises(ValueError, match="thr: p must be in"):
        build_weighter({"name": "thr", "p": 1.0})
    with pytest.raises(ValueError, match="tau_on"):
        build_weighter({"name": "thr", "tau_on": "x"})
