"""Per-token advantages from per-token rewards: the two estimators `WeightedGRPOTrainer` offers.

`"process"`: process-supervised GRPO (DeepSeekMath, Shao et al. 2024, arXiv 2402.03300, section 4.1.3). A
process reward model gives output i of a group of G the step rewards r_i^{index(j)}, j = 1..K_i, where index(j) is
the end token of step j. With R the set of all step rewards of the group,

    r~_i^{index(j)} = (r_i^{index(j)} - mean(R)) / std(R)          A_{i,t} = sum_{index(j) >= t} r~_i^{index(j)}

i.e. each token's advantage is the reward-to-go of the group-normalised rewards from its own step on. tokrl adds
the sequence reward's group advantage A_i (TRL's, from the functions that return numbers; 0 when there are none,
which leaves the paper's formula exactly):

    A_{i,t} = A_i + sum_{s >= t, s rewarded} r~_{i,s}

"Rewarded" positions are the tokens that received a reward (every token for per-token lists, the span's last
token for spans). `std` follows TRL's `scale_rewards`: `"group"` the group's std (Bessel-corrected, as TRL's
`nanstd`, plus TRL's 1e-4), `"batch"` the std over all rewarded positions of the batch, `"none"` no division.

`"token"`: the token rewards alone, A_{i,t} = r_{i,t}: no baseline, no reward-to-go, no sequence term (for rewards
that are already advantages, e.g. from a token-level critic).
"""

from __future__ import annotations

import torch

ESTIMATORS = ("process", "token")
EPS = 1e-4  # TRL's


def _std(values: torch.Tensor) -> torch.Tensor:
    """Bessel-corrected std of a 1-D tensor; 0 for fewer than two values."""
    if values.numel() < 2:
        return values.new_zeros(())
    return values.std(unbiased=True)


def normalized_process_rewards(
    rewards: torch.Tensor, rewarded: torch.Tensor, num_generations: int, scale: str = "group"
) -> torch.Tensor:
    """r~ = (r - group mean) / (std + 1e-4) on rewarded positions, 0 elsewhere. Rows: consecutive groups."""
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    rows = rewards.shape[0]
    if rows % num_generations:
        raise ValueError(f"{rows} completions do not split into groups of {num_generations}")
    rewarded = rewarded.bool()
    out = torch.zeros_like(rewards, dtype=torch.float32)
    batch_std = _std(rewards[rewarded].float())
    for g in range(0, rows, num_generations):
        block, mask = rewards[g : g + num_generations].float(), rewarded[g : g + num_generations]
        values = block[mask]
        if values.numel() == 0:
            continue
        centred = block - values.mean()
        if scale == "group":
            centred = centred / (_std(values) + EPS)
        elif scale == "batch":
            centred = centred / (batch_std + EPS)
        out[g : g + num_generations] = torch.where(mask, centred, torch.zeros_like(centred))
    return out


def reward_to_go(values: torch.Tensor) -> torch.Tensor:
    """`out[:, t] = sum_{s >= t} values[:, s]`."""
    return values.flip(-1).cumsum(-1).flip(-1)


def process_advantages(
    sequence_advantages: torch.Tensor, normalized_rewards: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """`A_i + reward_to_go(r~)_t` on completion tokens, 0 elsewhere."""
    adv = sequence_advantages.reshape(-1, 1).float() + reward_to_go(normalized_rewards.float())
    return adv * mask.float()


def token_advantages(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The token rewards themselves, on completion tokens."""
    return rewards.float() * mask.float()
