"""The weighting contract, composition weighters and the registry."""

import pytest
import torch

from tokrl.weighting import (
    Clip,
    DatasetColumn,
    EntropyQuantile,
    Normalize,
    Product,
    TokenView,
    TokenWeighter,
    Uniform,
    build_weighter,
    register_weighter,
)

MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def view(**kw):
    return TokenView(completion_ids=torch.zeros_like(MASK), completion_mask=MASK, **kw)


class Const(TokenWeighter):
    def __init__(self, values):
        self.values = torch.tensor(values, dtype=torch.float32)

    def weigh(self, view):
        return self.values


def test_uniform_is_the_mask():
    assert torch.equal(Uniform()(view()), MASK.float())


def test_contract_zeroes_outside_mask_and_detaches():
    w = Const([[2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0]])(view())
    assert w.tolist() == [[2.0, 3.0, 4.0, 0.0], [6.0, 7.0, 0.0, 0.0]]
    assert not w.requires_grad


def test_contract_rejects_wrong_shape_and_zeroes_non_finite_with_one_warning(caplog):
    with pytest.raises(ValueError, match="shape"):
        Const([[1.0, 2.0]])(view())

    class NaNs(Const):
        pass

    bad = NaNs([[1.0, float("nan"), float("inf"), float("nan")], [2.0, 1.0, 1.0, 1.0]])
    with caplog.at_level("WARNING"):
        w = bad(view())
        bad(view())
    assert w.tolist() == [[1.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0]]  # the NaN at a pad position is not counted
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert warnings == ["NaNs produced 2 non-finite weights out of 5 completion tokens; they are set to 0 "
                        "(this warning is shown once)"]


def test_product_clip_normalize_by_hand():
    a = Const([[2.0, 0.5, 1.0, 7.0], [4.0, 0.0, 3.0, 3.0]])
    b = Const([[1.0, 2.0, 3.0, 1.0], [0.5, 9.0, 1.0, 1.0]])
    assert Product([a, b])(view()).tolist() == [[2.0, 1.0, 3.0, 0.0], [2.0, 0.0, 0.0, 0.0]]
    assert Clip(a, min=0.75, max=3.0)(view()).tolist() == [[2.0, 0.75, 1.0, 0.0], [3.0, 0.75, 0.0, 0.0]]
    # weights on valid tokens: 2, .5, 1, 4, 0 -> sum 7.5 over 5 tokens -> scale 5 / 7.5
    n = Normalize(a)(view())
    torch.testing.assert_close(n, torch.tensor([[2.0, 0.5, 1.0, 0.0], [4.0, 0.0, 0.0, 0.0]]) * (5 / 7.5))
    assert n[MASK.bool()].mean().item() == pytest.approx(1.0)


def test_normalize_global_uses_the_gathered_totals():
    a = Const([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    other = torch.tensor([[15.0, 5.0]])  # another process: weight sum 15 over 5 tokens
    v = view(gather=lambda t: torch.cat([t, other]))
    # global: (5 + 15) weight over 10 tokens -> scale 10 / 20
    assert Normalize(a, scope="global")(v)[0, 0].item() == pytest.approx(0.5)
    assert Normalize(a, scope="batch")(v)[0, 0].item() == pytest.approx(1.0)


def test_needs_propagate_through_composition():
    w = Product([EntropyQuantile(), DatasetColumn("critical")])
    assert w.all_needs() == {"entropies"}
    assert w.all_columns() == ("critical",)


def test_column_weighter_reads_and_checks_the_column():
    col = torch.tensor([[0.2, 0.4, 0.6, 0.8], [1.0, 1.2, 1.4, 1.6]])
    w = DatasetColumn("r", scale=2.0, offset=1.0)(view(columns={"r": col}))
    torch.testing.assert_close(w, (1.0 + 2.0 * col) * MASK)
    with pytest.raises(KeyError, match="'missing'"):
        DatasetColumn("missing")(view())
    with pytest.raises(ValueError, match="column 'r' has shape"):
        DatasetColumn("r")(view(columns={"r": col[:, :2]}))


def test_registry_builds_nested_specs():
    spec = {"name": "normalize", "weighter": {"name": "product", "weighters": [
        {"name": "entropy_quantile", "rho": 0.5}, {"name": "clip", "weighter": "uniform", "max": 2.0}]}}
    w = build_weighter(spec)
    assert isinstance(w, Normalize) and isinstance(w.weighter, Product)
    assert w.weighter.weighters[0].rho == 0.5
    assert isinstance(build_weighter(None), Uniform)


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown weighter 'entropy_quantil'.*did you mean 'entropy_quantile'"):
        build_weighter("entropy_quantil")
    with pytest.raises(ValueError, match="has no option 'roh'.*did you mean 'rho'"):
        build_weighter({"name": "entropy_quantile", "roh": 0.2})
    with pytest.raises(ValueError, match="could not be imported"):
        build_weighter("no_such_pkg.mod:Thing")


def test_user_weighter_by_registration_and_dotted_path():
    @register_weighter("test_first_token")
    class FirstToken(TokenWeighter):
        def weigh(self, view):
            w = torch.zeros_like(view.mask)
            w[:, 0] = 1.0
            return w

    assert build_weighter("test_first_token")(view())[:, 0].tolist() == [1.0, 1.0]
    assert isinstance(build_weighter("tokrl.weighting.uniform:Uniform"), Uniform)
