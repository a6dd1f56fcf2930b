"""Property tests for every built-in weighter: shape, zero outside the mask, finite, detached, deterministic."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokrl.weighting import (Clip, DatasetColumn, EntropyQuantile, Normalize, Product, RandomQuantile, ShuffledColumn,
                             TokenView, Uniform)
from tokrl.weighting.thr import THR_COLUMN, WEIGHT_COLUMN, THRWeighter


def weighters():
    return [
        Uniform(),
        EntropyQuantile(rho=0.2),
        EntropyQuantile(rho=0.7, select="quantile", scope="batch"),
        EntropyQuantile(rho=0.3, scope="sequence", invert=True),
        EntropyQuantile(rho=0.5, soft_temperature=0.3),
        EntropyQuantile(rho=0.2, lowest=True),
        RandomQuantile(rho=0.2),
        RandomQuantile(rho=0.3, scope="sequence", seed=4),
        ShuffledColumn("w", seed=1),
        DatasetColumn("w"),
        Product([EntropyQuantile(rho=0.5), DatasetColumn("w", scale=2.0, offset=1.0)]),
        Clip(DatasetColumn("w"), min=0.0, max=0.5),
        Normalize(EntropyQuantile(rho=0.4, soft_temperature=1.0)),
        THRWeighter(p=0.3),
        Product([EntropyQuantile(rho=0.2), THRWeighter(p=-0.2)]),
    ]


@st.composite
def views(draw):
    rows = draw(st.integers(1, 5))
    cols = draw(st.integers(1, 9))
    lengths = draw(st.lists(st.integers(0, cols), min_size=rows, max_size=rows))
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(cols)[None] < torch.tensor(lengths)[:, None]).long()
    # ties are likely: entropies drawn from a handful of values
    entropies = torch.randint(0, 4, (rows, cols), generator=g).float() * 0.5
    column = torch.randn(rows, cols, generator=g)
    return mask, entropies, column


def make_view(mask, entropies, column):
    thr_weight = 1.0 + 0.3 * torch.sign(column) * (column.abs() > 0.5)  # as THRGRPOTrainer stores it
    return TokenView(completion_ids=torch.zeros_like(mask), completion_mask=mask,
                     entropies=entropies.clone().requires_grad_(True),
                     columns={"w": column, THR_COLUMN: column, WEIGHT_COLUMN: thr_weight})


@settings(max_examples=60, deadline=None)
@given(views())
def test_every_weighter_honours_the_contract(data):
    mask, entropies, column = data
    for weighter in weighters():
        w = weighter(make_view(mask, entropies, column))
        assert w.shape == mask.shape
        assert not w.requires_grad
        assert torch.isfinite(w).all()
        assert (w[mask == 0] == 0).all()
        again = weighter(make_view(mask, entropies, column))
        assert torch.equal(w, again), weighter


@settings(max_examples=60, deadline=None)
@given(views(), st.floats(0.0, 1.0))
def test_topk_keeps_at_least_ceil_rho_n_tokens_and_exactly_that_without_ties(data, rho):
    import math

    mask, entropies, _ = data
    n = int(mask.sum())
    w = EntropyQuantile(rho=rho)(make_view(mask, entropies, entropies))
    if n == 0:
        assert w.sum() == 0
        return
    k = min(n, max(1, math.ceil(rho * n - 1e-9)))
    assert int(w.sum()) >= k
    distinct = torch.rand(entropies.shape, generator=torch.Generator().manual_seed(n))  # ties have probability 0
    assert int(EntropyQuantile(rho=rho)(make_view(mask, distinct, distinct)).sum()) == k
