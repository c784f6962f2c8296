"""What a gateway protocol provides, and SMPP 3.4 through smpplib.

The gateway (gateway.py) knows only `Transport`: bind, submit one part and
learn its fate, and have the link hand over what arrives (mobile-originated
messages and delivery receipts) through one callback that stores them
before the protocol acknowledges. A CMPP 2.0/3.0 adapter for a Chinese
operator's gateway implements the same four methods (see README, "SMS
gateway").
"""

from __future__ import annotations

import logging
import re
import select
import socket
import time
from collections.abc import Callable
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
# how long the SMSC may take to answer one submit before its fate is unknown
SUBMIT_ANSWER_SECONDS = 10.0
# SMPP statuses that mean "not now": the same submit may succeed later
# esm_class bit 2 on a deliver_sm: an SMSC delivery receipt
ESM_CLASS_RECEIPT = 0x04
TEMPORARY_STATUSES = {0x08, 0x14, 0x58, 0x64}  # RSYSERR, RMSGQFUL, RTHROTTLED, RX_T_APPN


@dataclass
class Delivery:
    """A message from a mobile (an SMS reply)."""
    source: str
    text: str


@dataclass
class Receipt:
    """A delivery receipt: the SMSC's message id and its final state."""
    message_id: str
    status: str  # DELIVRD, UNDELIV, EXPIRED, REJECTD, ...


class LinkLost(Exception):
    """The link to the SMSC is gone. `sent` tells whether the submit in
    progress may have reached the SMSC (then its outcome is unknown)."""

    def __init__(self, message: str, sent: bool = False):
        super().__init__(message)
        self.sent = sent


class SubmitRefused(Exception):
    """The SMSC answered the submit with an error status."""

    def __init__(self, status: int):
        super().__init__(f"SMSC refused the message: status 0x{status:02x} "
                         f"({smpplib.consts.DESCRIPTIONS.get(status, 'unknown')})")
        self.status = status
        self.temporary = status in TEMPORARY_STATUSES


# the sink returns True once the event is stored; False makes the protocol
# refuse it (the SMSC delivers it again later), so nothing is lost
EventSink = Callable[[Delivery | Receipt], bool]


class Transport(Protocol):
    """A link to an SMS centre, as the gateway uses it."""

    def bind(self, sink: EventSink) -> None:
        """Connect and log in; deliveries and receipts go to `sink` from now
        on. Raises LinkLost when the SMSC cannot be reached."""

    def submit(self, destination: str, source: str, short_message: bytes,
               data_coding: int, esm_class: int) -> str:
        """Send one part, asking for a delivery receipt; the SMSC's message
        id. Raises SubmitRefused, or LinkLost (sent=True when the part may
        have reached the SMSC without its answer reaching us)."""

    def poll(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for arrivals and hand them to the
        sink; keep the link alive. Raises LinkLost."""

    def close(self) -> None:
        """Unbind and disconnect (idempotent)."""


class SmppTransport:
    """SMPP 3.4 as a transceiver, one synchronous session (smpplib)."""

    def __init__(self, host: str, port: int, system_id: str, password: str):
        self.host, self.port = host, port
        self.system_id, self.password = system_id, password
        self.client: smpplib.client.Client | None = None
        self.sink: EventSink | None = None
        self.answers: dict[int, tuple[int, str]] = {}
        self.idle_seconds = 0.0  # quiet time on the link, for enquire_link

    def bind(self, sink: EventSink) -> None:
        self.close()
        self.sink = sink
        client = smpplib.client.Client(self.host, self.port, timeout=1,
                                       allow_unknown_opt_params=True,
                                       logger_name="smsgw.smpp")
        client.set_message_sent_handler(self._answered)
        client.set_message_received_handler(self._received)
        # an error status is an answer like any other (submit reads it)
        client.set_error_pdu_handler(lambda pdu: None)
        self.client = client
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

    def submit(self, destination: str, source: str, short_message: bytes,
               data_coding: int, esm_class: int) -> str:
        if self.client is None:
            raise LinkLost("not bound")
        try:
            pdu = self.client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_UNK, source_addr=source,
                dest_addr_ton=smpplib.consts.SMPP_TON_UNK, destination_addr=destination,
                short_message=short_message, data_coding=data_coding, esm_class=esm_class,
                registered_delivery=smpplib.consts.SMPP_SMSC_DELIVERY_RECEIPT_BOTH)
        except (smpplib.exceptions.ConnectionError, OSError) as exc:
            # sendall failed: the SMSC has no whole PDU, so it did not take it
            raise LinkLost(f"link lost before submit: {exc}", sent=False) from None
        deadline = time.monotonic() + SUBMIT_ANSWER_SECONDS
        while pdu.sequence not in self.answers:
            if time.monotonic() > deadline:
                raise LinkLost("the SMSC did not answer the submit", sent=True)
            try:
                self._read(1.0)
            except LinkLost as exc:
                raise LinkLost(str(exc), sent=True) from None
        status, message_id = self.answers.pop(pdu.sequence)
        if status != 0:
            raise SubmitRefused(status)
        return message_id

    def poll(self, timeout: float) -> None:
        if self.client is None:
            raise LinkLost("not bound")
        self._read(timeout)

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

    def _read(self, timeout: float) -> None:
        """Read and act on what arrives within `timeout` (at least one PDU
        if one comes); an idle link gets an enquire_link."""
        try:
            readable, _, _ = select.select([self.client._socket], [], [], timeout)
            if readable:
                self.idle_seconds = 0.0
                self.client.read_once()
                self.client.poll()  # and whatever else is already there
            else:
                # a quiet link gets an enquire_link now and then, so a dead
                # one shows (the send fails) and NAT/firewall state stays
                self.idle_seconds += timeout
                if self.idle_seconds >= ENQUIRE_LINK_SECONDS:
                    self.idle_seconds = 0.0
                    self.client.send_pdu(smpplib.smpp.make_pdu("enquire_link",
                                                               client=self.client))
        except (smpplib.exceptions.ConnectionError, OSError, ValueError) as exc:
            raise LinkLost(f"link to the SMSC lost: {exc or 'closed'}") from None

    def _answered(self, pdu) -> None:
        message_id = pdu.message_id.decode() if isinstance(pdu.message_id, bytes) \
            else (pdu.message_id or "")
        self.answers[pdu.sequence] = (int(pdu.status), message_id)

    def _received(self, pdu) -> int:
        """deliver_sm: a receipt (esm_class bit 2) or a mobile's message;
        stored before the deliver_sm_resp, refused if it could not be."""
        if pdu.esm_class & ESM_CLASS_RECEIPT:
            text = (pdu.short_message or b"").decode("latin-1")
            message_id = pdu.receipted_message_id or b""
            message_id = message_id.decode() if isinstance(message_id, bytes) else message_id
            if not message_id:
                found = re.search(r"id:(\S+)", text)
                message_id = found.group(1) if found else ""
            found = re.search(r"stat:(\w+)", text)
            event = Receipt(message_id.rstrip("\0"), found.group(1) if found else "UNKNOWN")
        else:
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
            event = Delivery(source, encoding.decode(pdu.data_coding, sm))
        try:
            stored = self.sink(event)
        except Exception:
            log.exception("could not store what the SMSC delivered; it will deliver again")
            stored = False
        return smpplib.consts.SMPP_ESME_ROK if stored else smpplib.consts.SMPP_ESME_RSYSERR
