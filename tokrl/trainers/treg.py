"""T-REG: DPO plus token-level reward regularisation (Zhou et al., arXiv 2412.02685, ACL 2025).

    loss = mean over pairs [ L_DPO + alpha * w * (L_REG(y_w) + L_REG(y_l)) ]
    L_REG(y) = -beta * sum_t m_t r_t log pi_theta(y_t | x, y_<t)        (policy log-probs only, no reference)
    w = stopgrad sigmoid(h_l - h_w),   h = beta * sum_t m_t (log pi_theta - log pi_ref)   (unweighted DPO rewards)

`r_t` in (-0.5, 0.5) are the self-generated token rewards the T-REG scoring pipeline writes as the dataset columns
`chosen_token_rewards` / `rejected_token_rewards`. They reach the trainer through the weighting interface (a
`DatasetColumn` weighter over the same token view as any DPO weighter) and enter through `WeightedDPOTrainer`'s
`extra_token_loss` hook; TRL's DPO loss, margin and metrics stay unweighted.

Sign check (derived here; the paper body and code could not be read, the structure is from two secondary write-ups):
d loss / d log pi(y_w,t) = -beta w (1 + alpha r_w,t) and d loss / d log pi(y_l,t) =
+beta w (1 - alpha r_l,t): DPO's gradient with per-token weights 1 + alpha r on chosen and 1 - alpha r on rejected
tokens, while w comes from the unweighted margin. So a chosen token with r > 0 is pushed up harder and a rejected
token with r < 0 is pushed down harder, as the paper describes. `w = sigmoid(h_l - h_w)` is exactly the factor in
DPO's own gradient `-beta sigmoid(h_l - h_w) (grad log pi(y_w) - grad log pi(y_l))`. Tests pin the spec's
hand-computed pair (loss 0.650178) and this identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokrl.trainers.pair_weights import check_plain_sigmoid
from tokrl.trainers.weighted_dpo import DPOTokenParts, WeightedDPOTrainer
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig
from tokrl.weighting import DatasetColumn, TokenView

SEQUENCE_WEIGHTS = ("dpo_grad", "static")
NORMALIZERS = ("sum", "mean")


@dataclass
class TREGConfig(WeightedDPOConfig):
    r"""
    Configuration for [`TREGTrainer`]: `WeightedDPOConfig` plus T-REG's regulariser. The DPO part is TRL's plain
    sigmoid DPO (uniform token weights).

    > Parameters that control token weighting

    treg_alpha (`float`, *optional*, defaults to `0.25`):
        Regularisation strength alpha (paper grid {0.1, 0.25, 0.5}). 0 reproduces TRL's DPO exactly.
    treg_sequence_weight (`str`, *optional*, defaults to `"dpo_grad"`):
        `"dpo_grad"`: w = sigmoid(h_l - h_w), the DPO gradient coefficient (paper). `"static"`: w = 1, the paper's
        static-weighting ablation.
    treg_detach_weight (`bool`, *optional*, defaults to `True`):
        Treat w as a constant (stop-gradient), as the paper's "weight from the DPO gradient" implies.
    treg_reward_column (`str`, *optional*, defaults to `"token_rewards"`):
        Per-token reward column name `n`: the dataset columns `chosen_n` and `rejected_n`.
    treg_normalize (`str`, *optional*, defaults to `"sum"`):
        `"sum"` over completion tokens (paper) or `"mean"` (divided by the completion length).
    treg_expected_evaluator (`str`, *optional*, defaults to `None`):
        If set, the dataset's `token_columns_meta` `evaluator` must equal it.
    treg_expected_template_hash (`str`, *optional*, defaults to `None`):
        If set, the dataset's `token_columns_meta` `template_hash` must equal it.
    """

    treg_alpha: float = field(
        default=0.25, metadata={"help": "Regulariser weight alpha >= 0; paper grid {0.1, 0.25, 0.5}; 0 = plain DPO."}
    )
    treg_sequence_weight: str = field(
        default="dpo_grad",
        metadata={"help": "'dpo_grad' (w = sigmoid(h_l - h_w), paper) or 'static' (w = 1, ablation)."},
    )
    treg_detach_weight: bool = field(default=True, metadata={"help": "Stop-gradient on the sequence weight w."})
    treg_reward_column: str = field(
        default="token_rewards",
        metadata={"help": "Token-reward column name n: dataset columns chosen_n / rejected_n."},
    )
    treg_normalize: str = field(
        default="sum", metadata={"help": "'sum' over completion tokens (paper) or 'mean' (per completion length)."}
    )
    treg_expected_evaluator: str | None = field(
        default=None, metadata={"help": "If set, token_columns_meta 'evaluator' must equal it."}
    )
    treg_expected_template_hash: str | None = field(
        default=None, metadata={"help": "If set, token_columns_meta 'template_hash' must equal it."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.treg_alpha < 0:
            raise ValueError(f"treg_alpha must be >= 0, got {self.treg_alpha}")
        if self.treg_sequence_weight not in SEQUENCE_WEIGHTS:
            raise ValueError(
                f"treg_sequence_weight must be one of {SEQUENCE_WEIGHTS}, got {self.treg_sequence_weight!r}"
            )
        if self.treg_normalize not in NORMALIZERS:
            raise ValueError(f"treg_normalize must be one of {NORMALIZERS}, got {self.treg_normalize!r}")
        if not self.treg_reward_column:
            raise ValueError("treg_reward_column must name a per-token column")
        check_plain_sigmoid(self, "T-REG (its sequence weight w = sigmoid(h_l - h_w))")
        if self.label_smoothing != 0.0:
            raise ValueError("T-REG is derived for plain sigmoid DPO; label_smoothing changes the loss, unset it")
        if self.weighting is not None:
            raise ValueError(
                "T-REG keeps the DPO margin unweighted; 'weighting' must be None (the token rewards come from "
                "treg_reward_column)"
            )


class TREGTrainer(WeightedDPOTrainer):
    """T-REG (DPO + token-level reward regularisation); see `TREGConfig`."""

    _tag_names = ["trl", "dpo", "tokrl", "t-reg"]
    _name = "T-REG"
    _paper = {"title": "T-REG: Preference Optimization with Token-Level Reward Regularization", "id": "2412.02685"}
    config_class = TREGConfig

    def __init__(self, model, ref_model=None, args=None, *pargs, weighter=None, **kwargs):
        if weighter is not None:
            raise ValueError("TREGTrainer keeps the DPO margin unweighted and takes no weighter")
        if args is None:
            args = TREGConfig(output_dir="treg-output")
        if not isinstance(args, TREGConfig):
            raise TypeError(f"TREGTrainer needs a TREGConfig, got {type(args).__name__}")
        self.treg_args = args
        self.reward_reader = DatasetColumn(self.treg_args.treg_reward_column)
        super().__init__(model, ref_model, self.treg_args, *pargs, **kwargs)

    def extra_column_names(self, args) -> tuple[str, ...]:
        return (args.treg_reward_column,) if args is not None else ()

    def expected_metadata(self) -> dict:
        return {
            "evaluator": self.treg_args.treg_expected_evaluator,
            "template_hash": self.treg_args.treg_expected_template_hash,
        }

    def extra_token_loss(self, parts: DPOTokenParts) -> torch.Tensor | None:
        args = self.treg_args
        view = TokenView(completion_ids=parts.completion_ids, completion_mask=parts.mask, columns=parts.columns)
        rewards = self.reward_reader(view).to(parts.policy_logps.dtype)  # [2B, L-1], 0 outside the completion
        terms = -self.beta * (rewards * parts.policy_logps * parts.mask).sum(1)
        if args.treg_normalize == "mean":
            terms = terms / parts.mask.sum(1).clamp(min=1.0)
        reg_chosen, reg_rejected = terms.chunk(2)
        if args.treg_sequence_weight == "static":
            w = torch.ones_like(reg_chosen)
        else:
            chosen, rejected = parts.logratios(weighted=False)
            w = torch.sigmoid(self.beta * (rejected - chosen))
            if args.treg_detach_weight:
                w = w.detach()
        self.log_treg(reg_chosen, reg_rejected, w, rewards, parts)
        if args.treg_alpha == 0:
            return None
        return (args.treg_alpha * w * (reg_chosen + reg_rejected)).mean()

    def log_treg(self, reg_chosen, reg_rejected, w, rewards, parts: DPOTokenParts) -> None:
        gather = self.accelerator.gather
        self.log_metric("treg/reg_chosen", gather(reg_chosen.detach()).mean().item())
        self.log_metric("treg/reg_rejected", gather(reg_rejected.detach()).mean().item())
        self.log_metric("treg/seq_weight_mean", gather(w.detach()).mean().item())
        for side, rows in parts.sides():
            values = self.gather_flat(rewards[rows][parts.mask[rows].bool()].detach().float())
            self.log_metric(f"treg/token_reward_mean_{side}", values.mean().item() if values.numel() else 0.0)
