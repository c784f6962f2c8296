"""UCS-2 splitting with a concatenation UDH: any text, split and joined
again, is the same text; every part fits in 140 octets."""

from hypothesis import given
from hypothesis import strategies as st

from smsgw import encoding


@given(st.text(min_size=1, max_size=1200), st.integers(0, 10_000))
def test_split_then_join_is_the_text(text, row_id):
    data_coding, esm_class, parts = encoding.split(text, row_id)
    assert data_coding == 8
    assert all(len(p) <= 140 for p in parts)
    if len(parts) > 1:
        assert esm_class == 0x40
        assert [p[:6] for p in parts] == [bytes([5, 0, 3, row_id % 256, len(parts), n])
                                          for n in range(1, len(parts) + 1)]
        # no part ends inside a surrogate pair: each decodes alone
        for p in parts:
            p[6:].decode("utf-16-be")
    else:
        assert esm_class == 0 and len(text.encode("utf-16-be")) <= 140
    assert encoding.join([(data_coding, esm_class, p) for p in parts]) == text


def test_seventy_characters_are_one_part_and_seventy_one_are_two():
    assert len(encoding.split("回" * 70, 1)[2]) == 1
    assert len(encoding.split("回" * 71, 1)[2]) == 2
