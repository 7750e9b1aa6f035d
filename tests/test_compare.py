"""lrn.compare's table formatting: mean ± sample std with digits that show the values."""

from lrn.compare import format_mean_std


def test_mean_and_sample_std_with_two_digits_for_percentages():
    assert format_mean_std([80.0, 82.0, 84.0]) == "82.00 ± 2.00"


def test_values_below_one_keep_four_digits():
    # MSE-like metrics: two digits would print 0.00 ± 0.00 for 0.0013, 0.0005, 0.0005
    assert format_mean_std([0.0013, 0.0005, 0.0005]) == "0.0008 ± 0.0005"


def test_one_value_has_no_spread_and_missing_values_are_left_out():
    assert format_mean_std([0.5, None, float("nan")]) == "0.5000"
    assert format_mean_std([None]) == "–"
    assert format_mean_std([1.23456, 1.23456], digits=3) == "1.235 ± 0.000"
