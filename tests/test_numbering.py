"""The caller-number normaliser the hotline looks customers up with."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from khhf import numbering
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
    # forms Chinese carriers deliver in the caller id (issue 9)
    ("013812345678", "13812345678"),         # national trunk prefix on a mobile
    ("+86013812345678", "13812345678"),
    ("138.1234.5678", "13812345678"),
    ("tel:+86-138-1234-5678", "13812345678"),
    ("tel:+8613812345678;phone-context=+86", "13812345678"),
    ("TEL:013812345678", "13812345678"),
    ("sip:+8613812345678@10.0.0.1;user=phone", "13812345678"),
    ("sip:013812345678;npdi@10.0.0.1", "13812345678"),
    ('"Wang" <sip:8613812345678@carrier>', "13812345678"),
    ("tel:+86-571-8765-4321", "057187654321"),
    ("861012345678", "01012345678"),         # 86 + fixed line without its 0
    ("020 8765 4321", "02087654321"),
])
def test_normalise_accepts_mainland_numbers(raw, expected):
    assert normalise(raw) == expected


@pytest.mark.parametrize("raw, why", [
    ("", "empty"),
    (None, "empty"),
    ("+12025550123", "not a mainland China number"),
    ("87654321", "without its area code"),
    ("8765432", "without its area code"),
    ("12345678901", "not an 11-digit mobile"),
    ("1381234567", "not an 11-digit mobile"),
    ("138123456789", "not an 11-digit mobile"),
    ("0123", "not a fixed line with area code"),
    ("anonymous", "withheld"),
    ("Anonymous", "withheld"),
    ("13812345678'--", "characters other than digits"),
    ("１３８１２３４５６７８", "characters other than digits"),  # full-width digits
    ("sip:carrier.example", "without a user part"),
    ("10086", "service number"),
    ("95588", "service number"),
    ("4008001234", "service number"),
    ("0101234567", "not a fixed line"),           # Beijing lines have 8 digits
    ("0131234567", "not a fixed line"),           # no area code 013
    ("1" * 200, "too long"),
    ("+86", "empty"),
])
def test_normalise_refuses_with_a_reason(raw, why):
    with pytest.raises(NumberError, match=why):
        normalise(raw)


def test_normalise_is_idempotent():
    for raw in ("+8613812345678", "+86 10 1234 5678", "0571-87654321"):
        once = normalise(raw)
        assert normalise(once) == once


def test_local_line_takes_the_given_area_code():
    assert normalise("8765 4321", area_code="0571") == "057187654321"
    assert normalise("87654321", area_code="010") == "01087654321"
    with pytest.raises(NumberError, match="without its area code"):
        normalise("87654321", area_code="0x")


# -- properties (hypothesis): every carrier form, and garbage ----------------

MOBILES = st.from_regex(numbering.MOBILE, fullmatch=True)
FIXED_LINES = st.from_regex(numbering.FIXED_LINE, fullmatch=True)
SEPARATORS = st.sampled_from(["", " ", "-", ".", "\u00a0"])


@st.composite
def spaced(draw, digits):
    """`digits` with random separators between some of them."""
    out = []
    for d in digits:
        out.append(d)
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(SEPARATORS))
    return "".join(out)


@st.composite
def mobile_forms(draw):
    mobile = draw(MOBILES)
    body = draw(spaced(mobile))
    form = draw(st.sampled_from([
        "{m}", "0{m}", "+86{m}", "+86 {m}", "86{m}", "0086{m}", "+860{m}", "tel:+86{m}",
        "tel:{m};phone-context=+86", "sip:+86{m}@10.0.0.1;user=phone", "sip:0{m}@carrier",
        '"x" <sip:{m}@carrier>']))
    # separators are fine in the number itself, not in a SIP URI's user part
    return mobile, form.format(m=mobile if form.startswith(("sip", '"')) else body)


@st.composite
def fixed_line_forms(draw):
    line = draw(FIXED_LINES)
    national = line[1:]  # without the trunk prefix 0, as international forms write it
    form = draw(st.sampled_from(["{l}", "({a}){r}", "{a}-{r}", "+86{n}", "+86 {n}", "0086{n}",
                                 "86{n}", "tel:+86-{n}"]))
    area = re.match(numbering.AREA_CODE, line).group(0)
    return line, form.format(l=line, a=area, r=line[len(area):], n=draw(spaced(national)))


@given(mobile_forms())
def test_every_carrier_form_of_a_mobile_is_the_same_11_digits(case):
    mobile, form = case
    assert normalise(form) == mobile


@given(fixed_line_forms())
def test_every_carrier_form_of_a_fixed_line_is_the_same_number(case):
    line, form = case
    assert normalise(form) == line


ANYTHING = st.one_of(st.text(max_size=40), st.text(alphabet="0123456789+-() .:;@<>tesip86",
                                                    max_size=30),
                     mobile_forms().map(lambda c: c[1]), fixed_line_forms().map(lambda c: c[1]))


@given(ANYTHING)
def test_normalise_gives_digits_or_a_number_error_and_is_idempotent(raw):
    try:
        once = normalise(raw)
    except NumberError as exc:
        assert str(exc)  # a reason, never an empty message
        return
    assert re.fullmatch(r"[0-9]+", once)
    assert numbering.CUSTOMER_NUMBER.fullmatch(once)
    assert normalise(once) == once


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
       st.text(alphabet=st.characters(blacklist_categories=("Nd",), blacklist_characters=" -.()"
                                      "\u00a0\u3000\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029"),
               min_size=1, max_size=5))
def test_a_mobile_with_junk_appended_is_refused(mobile, junk):
    """A customer's number followed by `'--` and the like is no number at all
    (issue 9: it once became a second customer with the same digits)."""
    if junk.strip() == "":
        return
    with pytest.raises(NumberError):
        normalise(mobile + junk)


def test_dialplan_patterns_come_from_the_same_rules():
    tokens = numbering.dialplan_tokens()
    assert tokens["UNIFIED_EXTEN"] == "_1[3-9]XXXXXXXXX"
    assert "_010XXXXXXXX" in tokens["CUSTOMER_EXTEN"]
    # every pattern matches exactly the lengths the regular expression does
    for pattern in tokens["CUSTOMER_EXTEN"]:
        as_regex = pattern[1:].replace("X", "[0-9]")
        example = re.sub(r"\[([0-9])-[0-9]\]", r"\1", as_regex).replace("[0-9]", "5")
        assert numbering.CUSTOMER_NUMBER.fullmatch(example), (pattern, example)


@pytest.mark.parametrize("raw", ["13800138000", "+8613800138000", "8613800138000",
                                 "008613800138000", "013800138000", "138 0013 8000",
                                 "+86 138-0013-8000"])
def test_a_mobile_in_any_form_is_stored_as_its_11_digits(raw):
    assert numbering.mobile(raw) == "13800138000"


@pytest.mark.parametrize("raw", ["01012345678", "10086", "12345678901", "+4479460000000", ""])
def test_what_is_no_mobile_is_refused(raw):
    with pytest.raises(NumberError):
        numbering.mobile(raw)


def test_a_unified_number_is_what_the_trunk_context_matches():
    pattern = re.compile(numbering.dialplan_tokens()["UNIFIED_EXTEN"][1:].replace("X", "[0-9]"))
    assert numbering.unified_number("+86 139-0000-0000") == "13900000000"
    for bad in ("12345678901", "01012345678", "10012345678", "139000000"):
        with pytest.raises(NumberError, match="not a unified number"):
            numbering.unified_number(bad)
        assert not pattern.fullmatch(bad)
