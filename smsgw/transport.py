"""What a gateway protocol provides, and SMPP 3.4 through smpplib.

The gateway (gateway.py) knows only `Transport`: bind, send submits without
waiting for their answers (a window of them in flight, matched by sequence
number), read what arrives (the submits' answers, mobile-originated messages
and delivery receipts), and acknowledge an arrival once it is stored, so an
arrival the gateway could not store is delivered again. A CMPP 2.0/3.0
adapter for a Chinese operator's gateway implements the same five methods
(docs/sms.md, "A CMPP 2.0/3.0 adapter").
"""

from __future__ import annotations

import logging
import re
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Protocol

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

from smsgw import encoding

log = logging.getLogger(__name__)

# seconds of quiet on the link before an enquire_link
ENQUIRE_LINK_SECONDS = 15
# esm_class bit 2 on a deliver_sm: an SMSC delivery receipt
ESM_CLASS_RECEIPT = 0x04
# SMPP statuses that mean "not now": the same submit may succeed later
TEMPORARY_STATUSES = {0x08, 0x14, 0x58, 0x64}  # RSYSERR, RMSGQFUL, RTHROTTLED, RX_T_APPN
READ_BYTES = 1 << 16
# the PDUs of every message, coded here with struct (smpplib's pure-Python
# codec cost ~330 us a message, a third of the gateway's time); the rest
# (bind, unbind, enquire_link, a mobile's message) go through smpplib
HEADER = struct.Struct(">LLLL")
SUBMIT_SM, SUBMIT_SM_RESP = 0x00000004, 0x80000004
DELIVER_SM, DELIVER_SM_RESP = 0x00000005, 0x80000005
TLV_RECEIPTED_MESSAGE_ID = 0x001E


@dataclass
class Submit:
    """One part to send."""
    destination: str
    source: str
    short_message: bytes
    data_coding: int
    esm_class: int


@dataclass
class Answer:
    """The SMSC's answer to the submit sent as `sequence`: status 0 and the
    SMSC's message id, or an error status."""
    sequence: int
    status: int
    message_id: str = ""


@dataclass
class Delivery:
    """A message from a mobile (an SMS reply). `token` acknowledges it."""
    source: str
    text: str
    token: int = 0


@dataclass
class Receipt:
    """A delivery receipt: the SMSC's message id and its final state.
    `token` acknowledges it."""
    message_id: str
    status: str  # DELIVRD, UNDELIV, EXPIRED, REJECTD, ...
    token: int = 0


class LinkLost(Exception):
    """The link to the SMSC is gone. Raised by `send`, `sent` tells whether
    any of the submits it was given may have reached the SMSC (then their
    outcome is unknown); those sent before are in flight, unanswered."""

    def __init__(self, message: str, sent: bool = False):
        super().__init__(message)
        self.sent = sent


class SubmitRefused(Exception):
    """The SMSC answered a submit with an error status."""

    def __init__(self, status: int):
        super().__init__(f"SMSC refused the message: status 0x{status:02x} "
                         f"({smpplib.consts.DESCRIPTIONS.get(status, 'unknown')})")
        self.status = status
        self.temporary = status in TEMPORARY_STATUSES


class Transport(Protocol):
    """A link to an SMS centre, as the gateway uses it."""

    def bind(self) -> None:
        """Connect and log in. Raises LinkLost when the SMSC cannot be reached."""

    def send(self, submits: list[Submit]) -> list[int]:
        """Send parts without waiting for their answers, each asking for a
        delivery receipt; their sequence numbers (an `Answer` comes back
        for each). Raises LinkLost, sent=True if any of them may have
        reached the SMSC."""

    def read(self, timeout: float) -> list[Answer | Delivery | Receipt]:
        """Wait up to `timeout` seconds for arrivals and return all there
        are; keep the link alive. Raises LinkLost."""

    def acknowledge(self, tokens: list[int], stored: bool) -> None:
        """Answer deliveries and receipts: stored, or refused so that the
        SMSC delivers them again later."""

    def close(self) -> None:
        """Unbind and disconnect (idempotent)."""


class SmppTransport:
    """SMPP 3.4 as a transceiver: smpplib's PDU codec and bind, our own
    reading (every PDU that arrived, in one pass) and sending (a window of
    submits in one write)."""

    def __init__(self, host: str, port: int, system_id: str, password: str):
        self.host, self.port = host, port
        self.system_id, self.password = system_id, password
        self.client: smpplib.client.Client | None = None
        self.buffer = bytearray()
        self.last_traffic = 0.0  # monotonic time of the last PDU in, for enquire_link

    def bind(self) -> None:
        self.close()
        client = smpplib.client.Client(self.host, self.port, timeout=1,
                                       allow_unknown_opt_params=True,
                                       logger_name="smsgw.smpp")
        self.client, self.buffer = client, bytearray()
        try:
            client.connect()
            # small PDUs both ways (submit, deliver_sm_resp): without this,
            # Nagle holds a submit behind a receipt's unacknowledged answer
            client._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.bind_transceiver(system_id=self.system_id, password=self.password)
        except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError) as exc:
            self.close()
            raise LinkLost(f"cannot bind to the SMSC at {self.host}:{self.port}: "
                           f"{exc or 'connection refused'}") from None
        self.last_traffic = time.monotonic()

    def send(self, submits: list[Submit]) -> list[int]:
        client = self._bound()
        sequences = [client.next_sequence() for _ in submits]
        # one PDU cut short is no PDU to the SMSC; of several, the first may
        # have gone whole before the write failed
        self._write(b"".join(map(submit_sm, sequences, submits)), sent=len(submits) > 1)
        return sequences

    def read(self, timeout: float) -> list[Answer | Delivery | Receipt]:
        client = self._bound()
        try:
            readable, _, _ = select.select([client._socket], [], [], timeout)
            if readable:
                data = client._socket.recv(READ_BYTES)
                if not data:
                    raise LinkLost("link to the SMSC lost: closed")
                self.buffer += data
                self.last_traffic = time.monotonic()
            elif time.monotonic() - self.last_traffic >= ENQUIRE_LINK_SECONDS:
                # a quiet link gets an enquire_link now and then, so a dead
                # one shows (the send fails) and NAT/firewall state stays
                self.last_traffic = time.monotonic()
                self._write(smpplib.smpp.make_pdu("enquire_link", client=client).generate())
        except OSError as exc:
            raise LinkLost(f"link to the SMSC lost: {exc}") from None
        arrivals: list[Answer | Delivery | Receipt] = []
        while len(self.buffer) >= 16:
            length = struct.unpack_from(">L", self.buffer)[0]
            if length < 16:
                raise LinkLost(f"link to the SMSC lost: a PDU of {length} bytes")
            if len(self.buffer) < length:
                break
            raw = bytes(self.buffer[:length])
            del self.buffer[:length]
            try:
                arrival = answer_or_receipt(raw)
                if arrival is None:
                    pdu = smpplib.smpp.parse_pdu(raw, client=client,
                                                 allow_unknown_opt_params=True)
                    arrival = self._act(pdu) if pdu is not None else None
            except (smpplib.exceptions.PDUError, ValueError, IndexError, struct.error) as exc:
                log.warning("unreadable PDU from the SMSC ignored: %s", exc)
                continue
            if arrival is not None:
                arrivals.append(arrival)
        return arrivals

    def acknowledge(self, tokens: list[int], stored: bool) -> None:
        if not tokens:
            return
        status = smpplib.consts.SMPP_ESME_ROK if stored else smpplib.consts.SMPP_ESME_RSYSERR
        # deliver_sm_resp: the header and an empty message_id
        self._write(b"".join(HEADER.pack(17, DELIVER_SM_RESP, status, token) + b"\0"
                             for token in tokens))

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None or client._socket is None:
            return
        try:
            if client.state not in (smpplib.consts.SMPP_CLIENT_STATE_OPEN,
                                    smpplib.consts.SMPP_CLIENT_STATE_CLOSED):
                client._socket.settimeout(0.5)
                client.unbind()
        except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError):
            client.state = smpplib.consts.SMPP_CLIENT_STATE_OPEN  # the link is gone anyway
        client.disconnect()

    # internals

    def _bound(self) -> smpplib.client.Client:
        if self.client is None:
            raise LinkLost("not bound")
        return self.client

    def _write(self, data: bytes, sent: bool = False) -> None:
        try:
            self._bound()._socket.sendall(data)
        except OSError as exc:
            raise LinkLost(f"link to the SMSC lost: {exc}", sent=sent) from None

    def _act(self, pdu) -> Answer | Delivery | Receipt | None:
        """What one PDU from the SMSC means; a link-level one is answered here."""
        command = pdu.command
        if command == "generic_nack":
            return Answer(pdu.sequence, int(pdu.status) or smpplib.consts.SMPP_ESME_RSYSERR)
        if command == "deliver_sm":
            return self._delivered(pdu)
        if command == "enquire_link":
            answer = smpplib.smpp.make_pdu("enquire_link_resp", client=self.client)
            answer.sequence = pdu.sequence
            self._write(answer.generate())
        elif command == "unbind":
            answer = smpplib.smpp.make_pdu("unbind_resp", client=self.client)
            answer.sequence = pdu.sequence
            self._write(answer.generate())
            self._bound().state = smpplib.consts.SMPP_CLIENT_STATE_OPEN
            raise LinkLost("the SMSC unbound")
        elif command != "enquire_link_resp":
            log.warning("unhandled SMPP command %s from the SMSC", command)
        return None

    @staticmethod
    def _delivered(pdu) -> Delivery:
        """deliver_sm that is no receipt: a mobile's message."""
        sm = pdu.short_message or b""
        if not sm and getattr(pdu, "message_payload", None):
            sm = pdu.message_payload
        if pdu.esm_class & encoding.ESM_CLASS_UDHI and sm:
            sm = sm[1 + sm[0]:]
        # as delivered, whatever its TON/NPI (8613800138000 as international,
        # 13800138000 as national, +86..., with spaces): the store
        # normalises it at the door (khhf.services.sms.receive)
        source = pdu.source_addr.decode() if isinstance(pdu.source_addr, bytes) \
            else pdu.source_addr
        return Delivery(source, encoding.decode(pdu.data_coding, sm), token=pdu.sequence)


def submit_sm(sequence: int, s: Submit) -> bytes:
    """A submit_sm PDU asking for a delivery receipt: addresses of unknown
    TON/NPI, no schedule or validity, the short message as given."""
    body = b"".join((
        b"\0\0\0", s.source.encode("ascii"), b"\0\0\0", s.destination.encode("ascii"), b"\0",
        # esm_class, protocol_id, priority_flag, schedule and validity (empty),
        # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
        bytes((s.esm_class, 0, 0, 0, 0, smpplib.consts.SMPP_SMSC_DELIVERY_RECEIPT_BOTH, 0,
               s.data_coding, 0, len(s.short_message))),
        s.short_message))
    return HEADER.pack(16 + len(body), SUBMIT_SM, 0, sequence) + body


def answer_or_receipt(raw: bytes) -> Answer | Receipt | None:
    """A submit_sm_resp or a delivery receipt (the PDUs every message
    brings), read from `raw`; None for any other PDU."""
    _, command, status, sequence = HEADER.unpack_from(raw)
    if command == SUBMIT_SM_RESP:
        return Answer(sequence, status, raw[16:].split(b"\0", 1)[0].decode("ascii", "replace"))
    if command != DELIVER_SM:
        return None
    body, at = raw, 16

    def cstring() -> bytes:
        nonlocal at
        end = body.index(b"\0", at)
        value, at = body[at:end], end + 1
        return value
    cstring()  # service_type
    at += 2    # source TON, NPI
    cstring()  # source_addr
    at += 2    # destination TON, NPI
    cstring()  # destination_addr
    esm_class = body[at]
    if not esm_class & ESM_CLASS_RECEIPT:
        return None
    at += 3    # esm_class, protocol_id, priority_flag
    cstring()  # schedule_delivery_time
    cstring()  # validity_period
    at += 4    # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    text = body[at + 1:at + 1 + body[at]].decode("latin-1")
    at += 1 + body[at]
    message_id = ""
    while at + 4 <= len(body):
        tag, length = struct.unpack_from(">HH", body, at)
        if tag == TLV_RECEIPTED_MESSAGE_ID:
            message_id = body[at + 4:at + 4 + length].rstrip(b"\0").decode("ascii", "replace")
        at += 4 + length
    if not message_id:
        found = re.search(r"id:(\S+)", text)
        message_id = found.group(1) if found else ""
    found = re.search(r"stat:(\w+)", text)
    return Receipt(message_id, found.group(1) if found else "UNKNOWN", token=sequence)
