"""Control weighters: the random mask keeps exactly the forking mask's count, the lowest-entropy mask keeps rho,
shuffled offline weights keep each sequence's values (hence its mean)."""

import pytest
import torch

from tokrl.weighting import EntropyQuantile, RandomQuantile, ShuffledColumn, TokenView, build_weighter

H = torch.tensor([[0.1, 2.0, 0.5, 9.9], [1.5, 0.05, 0.3, 0.9]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])


def view(ids=None, mask=MASK, entropies=H, **kw):
    ids = torch.arange(mask.numel()).view(mask.shape) if ids is None else ids
    return TokenView(completion_ids=ids, completion_mask=mask, entropies=entropies, **kw)


def random_view(seed, rows=4, cols=12):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, cols + 1, (rows,), generator=g)
    mask = (torch.arange(cols)[None] < lengths[:, None]).long()
    return view(torch.randint(0, 1000, (rows, cols), generator=g), mask, torch.rand(rows, cols, generator=g))


@pytest.mark.parametrize("scope", ["batch", "global", "sequence"])
@pytest.mark.parametrize("select", ["topk", "quantile"])
@pytest.mark.parametrize("rho", [0.1, 0.2, 0.5])
def test_random_mask_keeps_as_many_tokens_as_the_forking_mask(scope, select, rho):
    for seed in range(20):
        v = random_view(seed)
        forking = EntropyQuantile(rho=rho, scope=scope, select=select)(v)
        control = RandomQuantile(rho=rho, scope=scope, select=select, seed=seed)(v)
        assert ((control == 0) | (control == 1)).all() and (control * (1 - v.mask)).sum() == 0
        if scope == "sequence":
            assert control.sum(1).tolist() == forking.sum(1).tolist()
        else:
            assert control.sum() == forking.sum()


def test_random_mask_by_hand_count_and_global_gather():
    # 7 valid tokens, rho 0.2: k = ceil(1.4) = 2 kept, never the pad
    w = RandomQuantile(rho=0.2)(view())
    assert w.sum() == 2 and w[0, 3] == 0
    # global scope: the threshold is taken over both processes' tokens (here a second copy), 14 tokens -> k = 3
    # over the pool, so this rank keeps fewer than 3 of its own 7
    doubled = RandomQuantile(rho=0.2, scope="global")(view(gather=lambda x: torch.cat([x, torch.rand(7)])))
    assert doubled.sum() <= 3


def test_random_mask_is_seeded_by_seed_and_batch():
    a = RandomQuantile(rho=0.3, seed=1)(random_view(0))
    assert torch.equal(a, RandomQuantile(rho=0.3, seed=1)(random_view(0)))  # same batch, same draw (resume)
    other_seeds = [RandomQuantile(rho=0.3, seed=s)(random_view(0)) for s in range(2, 7)]
    assert any(not torch.equal(a, b) for b in other_seeds)
    v0, v1 = random_view(0), random_view(0)
    v1.completion_ids = v1.completion_ids + 1  # a different batch with the same layout
    assert not torch.equal(RandomQuantile(rho=0.3)(v0), RandomQuantile(rho=0.3)(v1))
    state = torch.random.get_rng_state()
    RandomQuantile(rho=0.3)(v0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG (sampling) is untouched


def test_random_mask_picks_every_position_equally_often():
    # one row of 10 tokens, k = 3: over many batches each position is kept with probability 0.3
    mask = torch.ones(1, 10, dtype=torch.long)
    counts = torch.zeros(1, 10)
    for b in range(2000):
        counts += RandomQuantile(rho=0.3)(view(torch.tensor([[b] * 10]), mask, None))
    assert (counts / 2000 - 0.3).abs().max() < 0.04


def test_random_mask_needs_no_entropy_and_builds_from_yaml():
    w = build_weighter({"name": "random_quantile", "rho": 0.5, "scope": "sequence", "seed": 3})
    assert isinstance(w, RandomQuantile) and w.all_needs() == frozenset()
    assert w(view(entropies=None)).sum(1).tolist() == [2.0, 2.0]  # ceil(0.5 * 3), ceil(0.5 * 4)


def test_lowest_keeps_the_rho_lowest_entropy_tokens():
    v = view()
    w = EntropyQuantile(rho=0.2, lowest=True)(v)
    # valid entropies 0.1 2.0 0.5 | 1.5 0.05 0.3 0.9; k = 2 -> 0.05 and 0.1, the same count as the forking mask
    assert w.tolist() == [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    assert v.stats["entropy_threshold"] == pytest.approx(0.1)
    assert EntropyQuantile(rho=0.2, invert=True)(view()).sum() == 5  # invert: the bottom 1 - rho, not rho
    per_row = EntropyQuantile(rho=0.5, scope="sequence", lowest=True)(view())
    assert per_row.tolist() == [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="lowest"):
        EntropyQuantile(lowest=True, invert=True)


def test_shuffled_column_keeps_each_rows_values_and_mean():
    column = torch.tensor([[0.9, 0.1, 0.5, 7.0], [0.2, 0.4, 0.6, 0.8]])
    v = view(columns={"w": column})
    w = ShuffledColumn("w", seed=2)(v)
    assert w[0, 3] == 0  # the pad stays out
    assert sorted(w[0, :3].tolist()) == pytest.approx([0.1, 0.5, 0.9])
    assert sorted(w[1].tolist()) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert w[0, :3].mean() == pytest.approx(0.5) and w[1].mean() == pytest.approx(0.5)
    assert torch.equal(w, ShuffledColumn("w", seed=2)(view(columns={"w": column})))
    # scale/offset as in the column weighter: 1 + 2 * values, shuffled
    scaled = ShuffledColumn("w", scale=2.0, offset=1.0, seed=2)(view(columns={"w": column}))
    assert sorted(scaled[1].tolist()) == pytest.approx([1.4, 1.8, 2.2, 2.6])
    # the permutation is random: over seeds, the first token does not always keep its own weight
    firsts = {ShuffledColumn("w", seed=s)(view(columns={"w": column}))[1, 0].item() for s in range(20)}
    assert len(firsts) > 1
