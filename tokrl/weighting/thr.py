"""Token Hidden Reward (THR) weighting of GRPO (Deng et al., "Token Hidden Reward: Steering Exploration-Exploitation
in Group Relative Deep Reinforcement Learning", arXiv 2510.03669, ICLR 2026), and its predecessor NTHR (Deng et al.,
"On the Effect of Negative Gradient in Group Relative Deep Reinforcement Optimization", arXiv 2505.18830).

For one prompt group with correct set P (advantage > 0), with g = e_y - q the prediction error of a token and h the
last-layer hidden state that produced it (logits = W h):

    THR_{j,k'} = A_j * s_{j,k'},   s_{j,k'} = sum_{i in P} sum_k <g_{i,k}, g_{j,k'}> <h_{i,k}, h_{j,k'}>
                                            = g_{j,k'}^T M+ h_{j,k'},   M+ = sum_{i in P, k} g_{i,k} h_{i,k}^T.

THR is the first-order change of sum_{i in P} log pi(y_i) when one SGD step on W trains on that token (checked by
`tests/test_thr.py::test_defining_property_*`). Computed in the factorised form, one group at a time, with the vector
g restricted to V* = the token ids that occur in the group's completions (no renormalisation), as in the NTHR paper.
q[V*] is recomputed from h and the |V*| needed unembedding rows; the full-vocabulary normaliser comes from the old
log-prob of the sampled token: lse = z_y - log pi(y), so no [T, V] logits are ever built.

What the paper says and what is reconstructed (the THR paper's body could not be read, only its abstract and
reviews; the NTHR paper's text was):
- tau = tau_beta * min over correct responses of their mean s+ (NTHR, beta = 1): paper-verified for NTHR.
- dominant = |s| > tau (`tau_on="s"`, default) or |THR| > tau_beta * min mean THR+ (`tau_on="thr"`): UNCERTAIN.
- weight on dominant tokens = 1 + p * sign(THR) (sign form, supported by the abstract and reviews): UNCERTAIN.
- non-dominant tokens keep weight 1 (default) or get 0 (`mask_nondominant=True`): UNCERTAIN.
- the self term (i,k) = (j,k') is kept (`include_self=True`, what the first-order expansion gives): UNCERTAIN;
  `include_self=False` drops only that one term.
- no per-response 1/|y| factors (the NTHR derivation drops token normalisation).
- "correct" = advantage > 0 (equals reward 1 in a mixed group of binary rewards); groups with no correct or no
  incorrect response, or all advantages 0, get THR 0 and weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokrl.weighting.base import TokenWeighter, rollout_weighters
from tokrl.weighting.registry import register_weighter
from tokrl.weighting.unembedding import Unembedding
from tokrl.weighting.view import TokenView

TAU_ON = ("s", "thr")
THR_COLUMN = "tokrl_thr"  # [B, T] THR values, computed per generation batch and carried to the loss
WEIGHT_COLUMN = "tokrl_thr_weight"  # [B, T] weights (the weighter's `carry_column`)


def influence_scores(
    hidden: torch.Tensor, token_cols: torch.Tensor, probs: torch.Tensor, positive: torch.Tensor, include_self: bool = True
) -> torch.Tensor:
    """s_t = g_t^T M+ h_t with M+ = sum over positive t' of g_t' h_t'^T, and g_t = onehot(token_cols[t]) - probs[t].

    hidden [n, d], token_cols [n] (column of each token in `probs`), probs [n, V'], positive [n] bool -> s [n].
    Never builds an [n, n] matrix. `include_self=False` removes the term t' = t (||g_t||^2 ||h_t||^2).
    """
    hidden = hidden.float()
    g = -probs.float()
    g[torch.arange(g.size(0), device=g.device), token_cols] += 1.0
    m_plus = g[positive].T @ hidden[positive]  # [V', d]
    s = ((g @ m_plus) * hidden).sum(-1)
    if not include_self:
        s = s - positive.float() * (g * g).sum(-1) * (hidden * hidden).sum(-1)
    return s


@dataclass
class THRResult:
    """Per-token THR of one batch. `s`, `thr` `[B, T]` (0 outside the mask and in degenerate groups); `dominant`,
    `scored` (token of a mixed group) bool `[B, T]`; `taus` one threshold per mixed group; `vstar` |V*| per group."""

    s: torch.Tensor
    thr: torch.Tensor
    dominant: torch.Tensor
    scored: torch.Tensor
    success_rate: torch.Tensor  # [B] fraction of correct responses in the row's group
    taus: list[float] = field(default_factory=list)
    vstar: list[int] = field(default_factory=list)


def token_hidden_rewards(
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    hidden_states: torch.Tensor,
    advantages: torch.Tensor,
    group_ids: torch.Tensor,
    unembedding: Unembedding,
    logps: torch.Tensor | None = None,
    *,
    restrict_vocab: bool = True,
    include_self: bool = True,
    tau_beta: float = 1.0,
    tau_on: str = "s",
) -> THRResult:
    """THR of every completion token of a batch of whole prompt groups.

    Shapes: completion_ids/completion_mask/logps `[B, T]`, hidden_states `[B, T, d]` (state t produced token t),
    advantages `[B]` (one per response, TRL's), group_ids `[B]`. `logps` are the old policy's log-probs of the sampled
    tokens (they give the full-vocabulary normaliser); without them it is computed over the vocabulary in chunks.
    """
    if tau_on not in TAU_ON:
        raise ValueError(f"thr: tau_on must be one of {TAU_ON}, got {tau_on!r}")
    if advantages.dim() != 1:
        raise ValueError(f"thr: advantages must be one per response ([B]), got shape {tuple(advantages.shape)}")
    device = completion_ids.device
    mask = completion_mask.bool()
    shape = completion_ids.shape
    s_out = torch.zeros(shape, device=device)
    thr_out = torch.zeros(shape, device=device)
    dominant = torch.zeros(shape, dtype=torch.bool, device=device)
    scored = torch.zeros(shape, dtype=torch.bool, device=device)
    success = torch.zeros(shape[0], device=device)
    result = THRResult(s_out, thr_out, dominant, scored, success)
    adv = advantages.float()
    for gid in torch.unique(group_ids).tolist():
        rows = (group_ids == gid).nonzero(as_tuple=True)[0]
        has_tokens = mask[rows].any(-1)
        correct_rows = rows[(adv[rows] > 0) & has_tokens]
        success[rows] = float((adv[rows] > 0).sum()) / len(rows)
        if len(correct_rows) == 0 or not bool(((adv[rows] < 0) & has_tokens).any()):
            continue  # degenerate group (all wrong, all right or constant reward): THR = 0, weight 1
        sel = mask[rows]  # [g, T]
        row_of_token = rows.unsqueeze(1).expand_as(sel)[sel]
        tokens = completion_ids[rows][sel]
        h = hidden_states[rows][sel].float()
        vocab = torch.unique(tokens) if restrict_vocab else torch.arange(unembedding.vocab_size, device=device)
        cols = torch.searchsorted(vocab, tokens)
        z = unembedding.logits(h, vocab)  # [n, |V*|]
        if logps is not None:
            lse = z.gather(1, cols.unsqueeze(1)).squeeze(1) - logps[rows][sel].float()
        else:
            lse = unembedding.logsumexp(h)
        probs = torch.exp(z - lse.unsqueeze(1))
        adv_tok = adv[row_of_token]
        positive = adv_tok > 0
        s = influence_scores(h, cols, probs, positive, include_self=include_self)
        thr = adv_tok * s
        # tau = beta * min over correct responses of the mean (over that response's tokens) of s+ (or THR+)
        ref = s if tau_on == "s" else thr
        pos_rows = row_of_token[positive]
        sums = torch.zeros(shape[0], device=device).index_add_(0, pos_rows, ref[positive])
        counts = torch.zeros(shape[0], device=device).index_add_(0, pos_rows, torch.ones_like(ref[positive]))
        tau = tau_beta * (sums[correct_rows] / counts[correct_rows]).min()
        s_out[rows] = s_out[rows].masked_scatter(sel, s)
        thr_out[rows] = thr_out[rows].masked_scatter(sel, thr)
        dominant[rows] = dominant[rows].masked_scatter(sel, ref.abs() > tau)
        scored[rows] = sel
        result.taus.append(float(tau))
        result.vstar.append(int(vocab.numel()))
    return result


def thr_weights(result: THRResult, mask: torch.Tensor, p: float, mask_nondominant: bool = False) -> torch.Tensor:
    """THR reweighting: 1 + p * sign(THR) on dominant tokens, 1 on the others of a mixed group (0 with
    `mask_nondominant`), 1 in degenerate groups, 0 outside the mask."""
    other = 0.0 if mask_nondominant else 1.0
    w = torch.where(result.dominant, 1.0 + p * torch.sign(result.thr), torch.full_like(result.thr, other))
    w = torch.where(result.scored, w, torch.ones_like(w))
    return w * mask.float()


def nthr_weights(result: THRResult, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """NTHR (arXiv 2505.18830): tokens of incorrect responses with s > tau, i.e. those whose penalty would pull the
    correct responses down, get their penalty scaled by eta = 2 |0.5 - p_x| (p_x the group's success rate); every
    other token keeps weight 1."""
    eta = (2.0 * (0.5 - result.success_rate).abs()).unsqueeze(1).expand_as(result.s)
    negative = (advantages.float() < 0).unsqueeze(1).expand_as(result.s)
    hit = result.scored & negative & result.dominant & (result.s > 0)
    w = torch.where(hit, eta, torch.ones_like(eta))
    return w * mask.float()


@register_weighter("thr")
class THRWeighter(TokenWeighter):
    """THR reweighting of GRPO's per-token policy loss (module docstring has the formula and its provenance).

    A rollout weighter: THR needs whole prompt groups and the old policy's hidden states, so a GRPO trainer calls
    it once per generation batch (`weigh`, through `score`) and carries the weights (`tokrl_thr_weight`) and THR
    (`tokrl_thr`) to the loss, where `carried` returns the weights and exposes THR as `view.values["thr"]`.

    Args:
        p: signed steering scalar, |p| < 1: > 0 exploitation (amplify positive THR), < 0 exploration, 0 = GRPO.
        tau_beta: beta of the dominant-token threshold tau = beta * min_i mean_k s+ (NTHR: 1).
        tau_on: "s" (default; threshold |s| against tau built from s+) or "thr" (|THR| against tau built from THR+).
        mask_nondominant: non-dominant tokens of mixed groups get weight 0 ("THR-only" training) instead of 1.
        restrict_vocab: restrict g to V* (token ids present in the group, NTHR) instead of the full vocabulary.
        include_self: keep the token's own term in s (default); False drops it.
    """

    rollout = True
    carry_column = WEIGHT_COLUMN  # one column for thr and nthr (a spec holds at most one of them)
    columns = (WEIGHT_COLUMN, THR_COLUMN)
    needs = frozenset({"hidden_states", "old_logps", "advantages", "group_ids", "unembedding"})
    mode = "thr"

    def __init__(
        self,
        p: float = 0.0,
        tau_beta: float = 1.0,
        tau_on: str = "s",
        mask_nondominant: bool = False,
        restrict_vocab: bool = True,
        include_self: bool = True,
    ):
        name = getattr(self, "registry_name", "thr")
        if not isinstance(p, (int, float)) or not -1.0 < float(p) < 1.0:
            raise ValueError(f"{name}: p must be in (-1, 1) so that 1 +/- p stays positive, got {p!r}")
        if not isinstance(tau_beta, (int, float)) or tau_beta < 0:
            raise ValueError(f"{name}: tau_beta must be >= 0, got {tau_beta!r}")
        if tau_on not in TAU_ON:
            raise ValueError(f"{name}: tau_on must be one of {TAU_ON}, got {tau_on!r}")
        self.p = float(p)
        self.tau_beta = float(tau_beta)
        self.tau_on = tau_on
        self.mask_nondominant = bool(mask_nondominant)
        self.restrict_vocab = bool(restrict_vocab)
        self.include_self = bool(include_self)
        self.last_result: THRResult | None = None

    @property
    def unembedding_rows(self) -> str:
        """Which LM-head rows the trainer must fetch under ZeRO-3: the batch's token ids, or the whole vocabulary."""
        return "batch" if self.restrict_vocab else "all"

    def score(self, view: TokenView, unembedding: Unembedding) -> tuple[dict[str, torch.Tensor], THRResult]:
        """Compute THR and the weights for whole groups. `view` needs completion ids/mask, hidden_states, advantages
        ([B]), group_ids and (recommended) old_logps. Returns the batch columns and the raw result."""
        result = token_hidden_rewards(
            view.completion_ids,
            view.completion_mask,
            view.require("hidden_states"),
            view.require("advantages"),
            view.require("group_ids"),
            unembedding,
            view.old_logps,
            restrict_vocab=self.restrict_vocab,
            include_self=self.include_self,
            tau_beta=self.tau_beta,
            tau_on=self.tau_on,
        )
        if self.mode == "nthr":
            weights = nthr_weights(result, view.completion_mask, view.advantages)
        else:
            weights = thr_weights(result, view.completion_mask, self.p, self.mask_nondominant)
        return {THR_COLUMN: result.thr * view.mask, WEIGHT_COLUMN: weights}, result

    def weigh(self, view: TokenView) -> torch.Tensor:
        """Generation-batch THR weights (groups intact); `view.values["thr"]` and `view.stats` get THR's numbers."""
        if view.hidden_states is None or view.unembedding is None:
            raise KeyError(
                f"{type(self).__name__}: the batch has no '{WEIGHT_COLUMN}' column; THR weights are computed per "
                "generation batch by a GRPO trainer (WeightedGRPOTrainer, THRGRPOTrainer)"
            )
        columns, result = self.score(view, view.unembedding)
        self.last_result = result
        view.values["thr"] = columns[THR_COLUMN]
        view.stats.update(thr_stats(result, view.completion_mask, view.gather))
        return columns[WEIGHT_COLUMN]

    def carried(self, view: TokenView, weights: torch.Tensor) -> torch.Tensor:
        thr = view.columns.get(THR_COLUMN)
        if thr is not None:
            view.values["thr"] = thr
            valid = view.completion_mask.bool()
            view.stats["thr_positive_frac"] = float((thr[valid] > 0).float().mean()) if valid.any() else 0.0
        return weights


def thr_stats(result: THRResult, mask: torch.Tensor, gather) -> dict[str, float]:
    """Generation-batch THR statistics, summed over processes (`gather`) before the ratios are taken."""
    valid = mask.bool()
    dominant = result.dominant & valid
    totals = torch.tensor(
        [float(valid.sum()), float(dominant.sum()), float((result.thr[dominant] > 0).sum()),
         float((result.scored & valid).sum()), float(result.thr[valid].abs().sum()), float(sum(result.taus)),
         float(len(result.taus)), float(sum(result.vstar))],
        device=mask.device,
    )
    n, n_dom, n_pos, n_scored, abs_sum, tau_sum, groups, vstar_sum = gather(totals[None]).sum(0).tolist()
    return {
        "dominant_frac": n_dom / max(n, 1.0),
        "positive_frac": n_pos / n_dom if n_dom else 0.0,
        "scored_frac": n_scored / max(n, 1.0),
        "abs_mean": abs_sum / max(n, 1.0),
        "tau_mean": tau_sum / groups if groups else 0.0,
        "vstar_mean": vstar_sum / groups if groups else 0.0,
        "mixed_groups": groups,
    }


@register_weighter("nthr")
class NTHRWeighter(THRWeighter):
    """NTHR preset (arXiv 2505.18830): scale the penalty of incorrect-response tokens with s > tau by
    eta = 2|0.5 - p_x|; tau = tau_beta * min mean s+ (paper: beta = 1). Everything else keeps weight 1."""

    mode = "nthr"

    def __init__(self, tau_beta: float = 1.0, restrict_vocab: bool = True, include_self: bool = True):
        super().__init__(p=0.0, tau_beta=tau_beta, tau_on="s", restrict_vocab=restrict_vocab, include_self=include_self)


def find_thr_weighter(weighter: TokenWeighter) -> THRWeighter | None:
    """The (single: they share one carried column) THR weighter inside a possibly composed weighter, or None."""
    return next((w for w in rollout_weighters(weighter) if isinstance(w, THRWeighter)), None)
