"""The comparison statistics against hand computations and published t-table values."""

import math

import pytest

from tokrl.compare.stats import NO_DIFFERENCE, mean_ci, paired_bootstrap, t_abs_cdf, t_quantile, verdict


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                                         (29, 2.0452)])
def test_t_quantile_matches_the_t_table(df, expected):
    assert t_quantile(0.95, df) == pytest.approx(expected, abs=1e-4)


def test_t_abs_cdf_closed_forms():
    # df=1 is the Cauchy: P(|T| <= 1) = 2 atan(1) / pi = 0.5; df=2: P(|T| <= t) = t / sqrt(2 + t^2)
    assert t_abs_cdf(1.0, 1) == pytest.approx(0.5)
    assert t_abs_cdf(3.0, 2) == pytest.approx(3 / math.sqrt(11))
    assert t_quantile(0.99, 2) == pytest.approx(9.9248, abs=1e-4)


def test_mean_ci_by_hand():
    # [1, 2, 3]: mean 2, s = 1, half width = 4.302653 / sqrt(3)
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci["mean"] == pytest.approx(2.0) and ci["std"] == pytest.approx(1.0)
    assert ci["hi"] - ci["mean"] == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    assert ci["mean"] - ci["lo"] == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    # [0.5, 0.7]: mean 0.6, s = 0.141421, half = 12.7062 * 0.141421 / sqrt(2) = 1.27062
    ci = mean_ci([0.5, 0.7])
    assert (ci["lo"], ci["hi"]) == pytest.approx((0.6 - 1.270620, 0.6 + 1.270620), abs=1e-5)


def test_one_seed_gives_no_interval():
    ci = mean_ci([0.4])
    assert ci["mean"] == 0.4 and ci["lo"] is None and ci["hi"] is None
    assert verdict(ci["lo"], ci["hi"]) == NO_DIFFERENCE


def test_bootstrap_of_a_constant_difference_is_that_constant():
    arm = {0: [1, 1, 0, 1], 1: [1, 0, 1, 1]}
    base = {0: [0, 0, -1, 0], 1: [0, -1, 0, 0]}
    out = paired_bootstrap(arm, base, num_resamples=200)
    assert out["diff"] == 1.0 and out["lo"] == 1.0 and out["hi"] == 1.0
    assert (out["num_seeds"], out["num_prompts"]) == (2, 4)


def test_bootstrap_distribution_matches_enumeration():
    # one seed, differences [0, 1] over two prompts: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    arm, base = {0: [1, 1]}, {0: [1, 0]}
    out = paired_bootstrap(arm, base, num_resamples=4000, seed=3)
    assert out["diff"] == 0.5 and (out["lo"], out["hi"]) == (0.0, 1.0)
    # at level 0.4 the 30th and 70th percentiles both fall on the 0.5 atom (cumulative 0.25 -> 0.75)
    narrow = paired_bootstrap(arm, base, num_resamples=4000, level=0.4, seed=3)
    assert (narrow["lo"], narrow["hi"]) == (0.5, 0.5)
    # the seeds are resampled too: two seeds with one prompt each and differences 0 and 1 give the same atoms
    two = paired_bootstrap({"a": [1], "b": [1]}, {"a": [1], "b": [0]}, num_resamples=4000, level=0.4, seed=3)
    assert (two["lo"], two["hi"]) == (0.5, 0.5)


def test_bootstrap_is_seeded_and_pairs_only_shared_seeds():
    arm = {0: [1, 0, 1, 1, 0], 1: [1, 1, 1, 0, 0], 2: [0, 0, 0, 0, 0]}
    base = {0: [0, 0, 1, 0, 0], 1: [1, 0, 0, 0, 1]}
    a = paired_bootstrap(arm, base, num_resamples=500, seed=1)
    assert a == paired_bootstrap(arm, base, num_resamples=500, seed=1)
    assert a["num_seeds"] == 2 and a["diff"] == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert a["lo"] <= a["diff"] <= a["hi"]
    with pytest.raises(ValueError, match="seed 0"):
        paired_bootstrap({0: [1, 0]}, {0: [1]})
    with pytest.raises(ValueError, match="no seed"):
        paired_bootstrap({5: [1]}, {6: [1]})


def test_verdict_only_where_the_interval_supports_it():
    assert verdict(0.01, 0.2) == "better"
    assert verdict(-0.3, -0.02) == "worse"
    assert verdict(-0.1, 0.2) == NO_DIFFERENCE
    assert verdict(0.0, 0.2) == NO_DIFFERENCE  # touching 0 is not a detected difference
    assert verdict(0.01, 0.2, higher_is_better=False) == "worse"
