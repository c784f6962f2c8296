"""Text to short_message bytes: UCS-2 (data_coding 8), long texts split into
parts with a concatenation UDH (esm_class 0x40, 8-bit reference).

Every message goes out in UCS-2: the project's messages are Chinese, and a
GSM 7-bit path for the rare pure-ASCII text is not worth a second encoding.
"""

from __future__ import annotations

DATA_CODING_UCS2 = 8
ESM_CLASS_DEFAULT = 0x00
ESM_CLASS_UDHI = 0x40
# 140 octets of user data: 70 UCS-2 units alone, 67 after a 6-octet UDH
SINGLE_UNITS = 70
PART_UNITS = 67
MAX_PARTS = 255


def split(text: str, reference: int) -> tuple[int, int, list[bytes]]:
    """(data_coding, esm_class, short_messages) for `text`.

    `reference` (0-255) ties the parts of one long message together on the
    handset; the caller derives it from the message's row id. A surrogate
    pair (a character beyond the BMP) is never cut between two parts.
    """
    encoded = text.encode("utf-16-be")
    units = [encoded[i:i + 2] for i in range(0, len(encoded), 2)]
    if len(units) <= SINGLE_UNITS:
        return DATA_CODING_UCS2, ESM_CLASS_DEFAULT, [encoded]
    chunks: list[list[bytes]] = []
    i = 0
    while i < len(units):
        end = min(i + PART_UNITS, len(units))
        if end < len(units) and 0xD8 <= units[end - 1][0] <= 0xDB:  # high surrogate
            end -= 1
        chunks.append(units[i:end])
        i = end
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"message too long: {len(chunks)} parts, at most {MAX_PARTS}")
    ref = reference % 256
    return DATA_CODING_UCS2, ESM_CLASS_UDHI, [
        bytes([0x05, 0x00, 0x03, ref, len(chunks), n]) + b"".join(chunk)
        for n, chunk in enumerate(chunks, start=1)]


def join(parts: list[tuple[int, int, bytes]]) -> str:
    """The text of (data_coding, esm_class, short_message) parts received in
    order: the inverse of `split`, used by tests and the inbox."""
    out = []
    for data_coding, esm_class, sm in parts:
        if esm_class & ESM_CLASS_UDHI:
            sm = sm[1 + sm[0]:]  # skip the UDH: its length octet, then that many
        out.append(decode(data_coding, sm))
    return "".join(out)


def decode(data_coding: int, sm: bytes) -> str:
    """A short_message's text: UCS-2 for data_coding 8, else ASCII/Latin-1
    (what an SMSC hands over for the default alphabet in practice)."""
    if data_coding == DATA_CODING_UCS2:
        return sm.decode("utf-16-be", errors="replace")
    return sm.decode("latin-1")
