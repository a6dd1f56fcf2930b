"""What every weighted trainer does with its weighter, written once for GRPO, DPO and SFT: build it (`use_weighter`)
and log its weights:

- TRL metrics: `weights/kept_frac`, `weights/mean`, `std`, `min`, `max` over this step's completion tokens (all
  processes), and every scalar the weighter left in `view.stats` as `weights/<key>`;
- the token dump: `token_values.jsonl` every `token_dump_steps` steps (`TokenDumpCallback`, from `last_view`),
  which `tokrl inspect RUN_DIR` renders;
- TensorBoard (when `report_to` has it): histograms `weights/histogram` and `weights/entropy_histogram`.
"""

from __future__ import annotations

import torch

from tokrl.diagnostics.token_dump import TokenDumpCallback
from tokrl.weighting import TokenView, build_weighter, weight_stats
from tokrl.weighting.base import check_needs


class WeightLogging:
    """Mixin for a TRL trainer (it has `self._metrics`, as every TRL trainer has).

    Call `use_weighter(...)`, `setup_weight_logging()` after TRL's `__init__`, and `record_weights(view, weights,
    mask)` once per weighted micro-batch.
    """

    def use_weighter(self, weighter, args, supported) -> None:
        """`self.weighter` from `weighter` (an object or a spec), else `args.weighting`, else uniform; a need this
        trainer cannot fill (`supported`) is a one-line error now, before training."""
        self.weighter = build_weighter(weighter if weighter is not None else getattr(args, "weighting", None))
        check_needs(self.weighter, supported, type(self).__name__)

    def setup_weight_logging(self) -> None:
        self.last_view: TokenView | None = None
        self.last_prompt = None  # optional (prompt_ids, prompt_mask) of `last_view`'s rows, for the dump
        self._histogram_values: list[torch.Tensor] = []
        if getattr(self.args, "token_dump_steps", 0):
            TokenDumpCallback.attach(self)

    @property
    def _mode(self) -> str:
        return "train" if self.model.training else "eval"

    def log_metric(self, key: str, value: float) -> None:
        """Append one value to TRL's metric `key` of the current mode (averaged and logged by TRL's `log`)."""
        self._metrics[self._mode][key].append(float(value))

    def record_weights(self, view: TokenView, weights: torch.Tensor, mask: torch.Tensor) -> None:
        """Log the statistics of `weights` over `mask`, keep `view` (with `values["weight"]`) for the dump."""
        valid = self.gather_flat(weights[mask.bool()].detach().float())
        for key, value in [*weight_stats(valid, torch.ones_like(valid)).items(), *view.stats.items()]:
            self.log_metric(f"weights/{key}", value)
        if self._mode == "train" and self._tensorboard() is not None:
            self._histogram_values.append(valid.cpu())
        view.values["weight"] = weights
        self.last_view = view

    def gather_flat(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate a tensor across processes along dim 0 (lengths may differ per process)."""
        if self.accelerator.num_processes == 1:
            return x
        x = x.float()
        sizes = self.accelerator.gather(torch.tensor([x.shape[0]], device=x.device))
        padded = self.accelerator.pad_across_processes(x, dim=0, pad_index=0)
        gathered = self.accelerator.gather(padded)
        chunk = padded.shape[0]
        return torch.cat([gathered[i * chunk : i * chunk + int(s)] for i, s in enumerate(sizes.tolist())], dim=0)

    def _tensorboard(self):
        """The TensorBoard writer of TRL's callback, when `report_to` includes tensorboard."""
        for callback in self.callback_handler.callbacks:
            if type(callback).__name__ == "TensorBoardCallback":
                return getattr(callback, "tb_writer", None)
        return None

    def log(self, logs, start_time=None):
        super().log(logs, start_time)
        writer = self._tensorboard() if self._histogram_values else None
        if writer is not None and self.accelerator.is_main_process:
            values = torch.cat(self._histogram_values).float().numpy()
            writer.add_histogram("weights/histogram", values, self.state.global_step)
            view = self.last_view
            entropies = view.values.get("entropy", view.entropies) if view is not None else None
            if entropies is not None:
                mask = view.completion_mask.bool()
                writer.add_histogram("weights/entropy_histogram", entropies[mask].float().cpu().numpy(),
                                     self.state.global_step)
            writer.flush()
        self._histogram_values = []
