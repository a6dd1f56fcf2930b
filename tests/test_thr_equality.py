"""THR before/after the move into the GRPO base: the same numbers on a fixed batch.

The reference values were computed with the previous implementation (THRGRPOTrainer overriding
`_generate_and_score_completions`, `add_thr_columns` on the extra-forward path, commit 9f28451) on the fixed batch
below; the rollout-weighter path of `WeightedGRPOTrainer` must reproduce them to 1e-6.
"""

import pytest
import torch

from tokrl.data.arithmetic import ArithmeticTask
from tokrl.models import tiny_model
from tokrl.trainers.thr_grpo import THRGRPOConfig, THRGRPOTrainer
from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig

THR_BEFORE = [
    [27.4943676, 27.6984978, 27.6238003, 28.3836975, 27.6836071, 28.2743683],
    [0.639125347, 0.182923615, 2.82013154, 0.626924813, 0.0, 0.0],
    [12.4266634, 12.3434401, 12.2803125, 12.1877146, 12.1197586, 0.0],
    [-0.456494242, -0.460372686, 1.03625035, 0.0, 0.0, 0.0],
    [0.229198545, -0.215131193, -0.119528346, 0.282220036, -0.374589741, 0.278258532],
    [25.1960526, 24.8848057, 0.0, 0.0, 0.0, 0.0],
    [15.6579733, 15.7345667, 15.8141432, 15.5716372, 15.7528906, 0.0],
    [0.00373204355, -0.0287005734, -0.0538855083, -0.0237592645, 0.0519063771, 0.0591986068],
]
WEIGHT_BEFORE = {
    "p=0.3": [
    [1.29999995, 1.29999995, 1.29999995, 1.29999995, 1.29999995, 1.29999995],
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
    [1.29999995, 1.29999995, 1.29999995, 1.29999995, 1.29999995, 0.0],
    [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    [1.29999995, 1.29999995, 0.0, 0.0, 0.0, 0.0],
    [1.29999995, 1.29999995, 1.29999995, 1.29999995, 1.29999995, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
],
    "p=-0.2,thr,masked": [
    [0.800000012, 0.800000012, 0.800000012, 0.800000012, 0.800000012, 0.800000012],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.800000012, 0.800000012, 0.800000012, 0.800000012, 0.800000012, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.800000012, 0.800000012, 0.0, 0.0, 0.0, 0.0],
    [0.800000012, 0.800000012, 0.800000012, 0.800000012, 0.800000012, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
],
    "nthr": [
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
],
}
SPECS = {
    "p=0.3": {"name": "thr", "p": 0.3, "tau_beta": 0.5},
    "p=-0.2,thr,masked": {"name": "thr", "p": -0.2, "tau_beta": 0.5, "tau_on": "thr", "mask_nondominant": True},
    "nthr": {"name": "nthr", "tau_beta": 0.5},
}


def zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def fixed_batch(vocab):
    g = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(3, vocab, (8, 3), generator=g)
    completion_ids = torch.randint(3, vocab, (8, 6), generator=g)
    lengths = torch.tensor([6, 4, 5, 3, 6, 2, 5, 6])
    return dict(prompt_ids=prompt_ids, prompt_mask=torch.ones_like(prompt_ids), completion_ids=completion_ids,
                completion_mask=(torch.arange(6)[None] < lengths[:, None]).long(),
                advantages=torch.tensor([0.9, -0.6, 0.4, -0.7, -1.1, 0.8, 0.5, -0.2]))


@pytest.mark.parametrize("cls,cfg_cls", [(THRGRPOTrainer, THRGRPOConfig), (WeightedGRPOTrainer, WeightedGRPOConfig)])
@pytest.mark.parametrize("case", list(SPECS))
def test_thr_weights_equal_the_previous_implementation_on_a_fixed_batch(tmp_path, cls, cfg_cls, case):
    model, tok = tiny_model(seed=0)
    args = cfg_cls(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_completion_length=6,
                   report_to="none", use_cpu=True, temperature=0.7, beta=0.0, weighting=SPECS[case])
    dataset = ArithmeticTask(num_train=8, num_eval=4, max_value=9).build()["train"]
    trainer = cls(model=model, reward_funcs=[zero_reward], args=args, train_dataset=dataset, processing_class=tok)
    trainer.model.train()
    out = fixed_batch(model.config.vocab_size)
    trainer.add_rollout_weights(out)
    assert trainer.rollout_passes == {"reused": 0, "generation": 0, "extra": 1}
    torch.testing.assert_close(out["tokrl_thr"], torch.tensor(THR_BEFORE), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["tokrl_thr_weight"], torch.tensor(WEIGHT_BEFORE[case]), rtol=1e-6, atol=1e-6)
