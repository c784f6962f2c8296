"""The caller-number normaliser the hotline looks customers up with."""

import pytest

from khhf.numbering import NumberError, normalise


@pytest.mark.parametrize("raw, expected", [
    ("13812345678", "13812345678"),
    ("+8613812345678", "13812345678"),
    ("008613812345678", "13812345678"),
    ("8613812345678", "13812345678"),
    ("138 1234 5678", "13812345678"),
    ("138-1234-5678", "13812345678"),
    ("19912345678", "19912345678"),
    ("01012345678", "01012345678"),          # Beijing, 2-digit area code
    ("010-1234-5678", "01012345678"),
    ("05711234567", "05711234567"),          # 3-digit area code, 7-digit line
    ("057112345678", "057112345678"),        # 3-digit area code, 8-digit line
    ("+86 10 1234 5678", "01012345678"),     # international form drops the 0
    ("0086571 8765 4321", "057187654321"),
    ("(0571)87654321", "057187654321"),
])
def test_normalise_accepts_mainland_numbers(raw, expected):
    assert normalise(raw) == expected


@pytest.mark.parametrize("raw, why", [
    ("", "empty"),
    (None, "empty"),
    ("+12025550123", "not a mainland China number"),
    ("87654321", "without its area code"),
    ("12345678901", "not an 11-digit mobile"),
    ("1381234567", "not an 11-digit mobile"),
    ("138123456789", "not an 11-digit mobile"),
    ("0123", "not a fixed line with area code"),
    ("anonymous", "characters other than digits"),
    ("+86", "empty"),
])
def test_normalise_refuses_with_a_reason(raw, why):
    with pytest.raises(NumberError, match=why):
        normalise(raw)


def test_normalise_is_idempotent():
    for raw in ("+8613812345678", "+86 10 1234 5678", "0571-87654321"):
        once = normalise(raw)
        assert normalise(once) == once
