"""The PDUs every message brings, coded by smsgw/transport.py with struct,
checked against two independent codecs: smpplib's (the same bytes) and
smpp34's Rust one (the SMSC simulator's: the same fields)."""

from __future__ import annotations

import smpp34
import smpplib.client
import smpplib.smpp

from smsgw.transport import HEADER, Answer, Receipt, Submit, answer_or_receipt, submit_sm


def test_a_submit_is_the_pdu_smpplib_makes_and_smpp34_reads():
    client = smpplib.client.Client("127.0.0.1", 1, allow_unknown_opt_params=True)
    for submit in (Submit("13900000001", "10658", "您好".encode("utf-16-be"), 8, 0),
                   Submit("13900000002", "106581234", bytes([5, 0, 3, 7, 2, 1]) + b"\x00A"
                          * 67, 8, 0x40)):
        theirs = smpplib.smpp.make_pdu(
            "submit_sm", client=client, source_addr_ton=0, source_addr=submit.source,
            dest_addr_ton=0, destination_addr=submit.destination,
            short_message=submit.short_message, data_coding=submit.data_coding,
            esm_class=submit.esm_class, registered_delivery=1)
        ours = submit_sm(theirs.sequence, submit)
        assert ours == theirs.generate()
        read = smpp34.decode(ours)
        assert (read.source_addr, read.destination_addr, read.esm_class, read.data_coding,
                read.registered_delivery, read.short_message, read.sequence_number) == \
            (submit.source, submit.destination, submit.esm_class, submit.data_coding, 1,
             submit.short_message, theirs.sequence)


def test_answers_and_receipts_are_read_and_a_mobiles_message_is_left_to_smpplib():
    assert answer_or_receipt(HEADER.pack(27, 0x80000004, 0, 5) + b"95d5165a38\0") == \
        Answer(5, 0, "95d5165a38")
    assert answer_or_receipt(HEADER.pack(16, 0x80000004, 0x58, 6)) == Answer(6, 0x58, "")
    by_tlv = smpp34.DeliverSm(
        "10658", "13900000001", b"id:ignored sub:001 stat:UNDELIV err:000", esm_class=4,
        tlvs=[smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID, b"abc12\0")],
        sequence_number=77).encode()
    assert answer_or_receipt(by_tlv) == Receipt("abc12", "UNDELIV", token=77)
    by_text = smpp34.DeliverSm("10658", "13900000001", b"id:abc13 sub:001 stat:DELIVRD",
                               esm_class=4, sequence_number=78).encode()
    assert answer_or_receipt(by_text) == Receipt("abc13", "DELIVRD", token=78)
    reply = smpp34.DeliverSm("10658", "13900000001", "1".encode("utf-16-be"), data_coding=8,
                             sequence_number=79).encode()
    assert answer_or_receipt(reply) is None
