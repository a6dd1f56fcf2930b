"""EntropyQuantile (the forking-token mask) against hand computations and TRL's own top_entropy_quantile."""

import math
from types import SimpleNamespace

import pytest
import torch
from trl import GRPOTrainer

from tokrl.weighting import EntropyQuantile, TokenView

# The spec's hand example (methods/forking.md §5 test 2): 7 valid tokens, one pad.
H = torch.tensor([[0.1, 2.0, 0.5, 9.9], [1.5, 0.05, 0.3, 0.9]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])


def view(entropies=H, mask=MASK, gather=None):
    v = TokenView(completion_ids=torch.zeros_like(mask), completion_mask=mask, entropies=entropies)
    if gather is not None:
        v.gather = gather
    return v


def test_topk_hand_example_keeps_two_and_never_the_pad():
    v = view()
    w = EntropyQuantile(rho=0.2, select="topk")(v)
    # k = ceil(0.2 * 7) = 2 -> keep 2.0 and 1.5; the pad (9.9) is never kept
    assert w.tolist() == [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    assert v.stats["entropy_threshold"] == pytest.approx(1.5)


def test_quantile_hand_example_linear_interpolation():
    v = view()
    w = EntropyQuantile(rho=0.2, select="quantile")(v)
    # sorted = [0.05, 0.1, 0.3, 0.5, 0.9, 1.5, 2.0]; position 0.8 * 6 = 4.8 -> tau = 0.9 + 0.8 * 0.6 = 1.38
    assert v.stats["entropy_threshold"] == pytest.approx(1.38, abs=1e-6)
    assert w.tolist() == [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_ties_at_the_threshold_are_all_kept():
    h = torch.tensor([[1.0, 1.0, 1.0, 0.2], [1.0, 0.1, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    w = EntropyQuantile(rho=0.2, select="topk")(view(h, mask))  # k = ceil(1.2) = 2, tau = 1.0, four tokens tie
    assert w.tolist() == [[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("select", ["topk", "quantile"])
@pytest.mark.parametrize("scope", ["batch", "global", "sequence"])
def test_rho_one_keeps_every_real_token(select, scope):
    w = EntropyQuantile(rho=1.0, select=select, scope=scope)(view())
    assert torch.equal(w, MASK.float())


def test_sequence_scope_thresholds_each_row():
    w = EntropyQuantile(rho=0.34, select="topk", scope="sequence")(view())
    # row 0: 3 valid, k = ceil(1.02) = 2 -> {2.0, 0.5}; row 1: 4 valid, k = ceil(1.36) = 2 -> {1.5, 0.9}
    assert w.tolist() == [[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]


def test_global_scope_uses_the_gathered_pool_batch_scope_does_not():
    other_rank = torch.tensor([5.0, 6.0, 7.0])  # the other process's valid entropies
    gather = lambda x: torch.cat([x, other_rank.to(x.dtype)])
    # pool of 10: k = ceil(0.2 * 10) = 2 -> tau = 6.0 -> nothing local is kept
    assert EntropyQuantile(rho=0.2, scope="global")(view(gather=gather)).sum() == 0
    assert EntropyQuantile(rho=0.2, scope="batch")(view(gather=gather)).sum() == 2


def test_invert_keeps_the_complement_inside_the_mask():
    top = EntropyQuantile(rho=0.2)(view())
    bottom = EntropyQuantile(rho=0.2, invert=True)(view())
    assert torch.equal(top + bottom, MASK.float())


def test_soft_mode_is_a_sigmoid_around_the_threshold():
    w = EntropyQuantile(rho=0.2, select="topk", soft_temperature=0.5)(view())
    expected = torch.sigmoid((H - 1.5) / 0.5) * MASK
    torch.testing.assert_close(w, expected)


@pytest.mark.parametrize("rho", [0.2, 0.5, 0.05, 1.0])
def test_matches_trl_top_entropy_quantile(rho):
    """scope=global, select=quantile is TRL's `get_high_entropy_mask` (1 process)."""
    g = torch.Generator().manual_seed(1)
    h = torch.rand(6, 11, generator=g) * 3
    lengths = torch.tensor([11, 4, 1, 7, 9, 2])
    mask = (torch.arange(11)[None] < lengths[:, None]).long()
    fake = SimpleNamespace(accelerator=SimpleNamespace(pad_across_processes=lambda x, **k: x, gather=lambda x: x))
    trl_mask = GRPOTrainer.get_high_entropy_mask(fake, h, mask, 1 - rho)
    ours = EntropyQuantile(rho=rho, scope="global", select="quantile")(view(h, mask))
    assert torch.equal(ours.bool(), trl_mask)


def test_weights_are_detached_and_zero_outside_the_mask():
    h = H.clone().requires_grad_(True)
    w = EntropyQuantile(rho=0.5, soft_temperature=1.0)(view(h))
    assert not w.requires_grad
    assert (w[MASK == 0] == 0).all()


@pytest.mark.parametrize("kwargs", [{"rho": 1.5}, {"rho": -0.1}, {"scope": "rank"}, {"select": "median"},
                                    {"soft_temperature": 0}])
def test_bad_settings_are_clear_errors(kwargs):
    with pytest.raises(ValueError, match="entropy_quantile"):
        EntropyQuantile(**kwargs)


def test_all_masked_batch_gives_zero_weights():
    mask = torch.zeros(2, 4, dtype=torch.long)
    v = view(H, mask)
    assert EntropyQuantile(rho=0.2)(v).sum() == 0
    assert "entropy_threshold" not in v.stats
