"""An SMPP 3.4 SMSC on loopback for the tests, the bench and the demo.

No maintained SMSC simulator that a test can drive installs from PyPI or
Debian here (README, "SMS gateway", says what was tried), so this is the
smallest honest one, built on the `smpp34` package's SMSC server (a kept
Rust PDU codec and session engine: bind, windowing, enquire_link, PDUs are
all the library's, none are hand-made here). It:

- accepts every bind (transceiver/transmitter/receiver) and every submit_sm,
  answering with a fresh message id;
- appends each accepted submit_sm as one JSON line to `--log` (time received,
  message id, addresses, data_coding, esm_class, the short_message in hex),
  so a test counts exactly what the SMSC got, across SMSC restarts;
- sends a delivery receipt (deliver_sm, esm_class 0x04, "id:... stat:DELIVRD")
  to the submitting session when registered_delivery asks for one: a
  session's receipts go in batches, those asked for in the last
  RECEIPT_DELAY seconds together (one timer and one time stamp a batch,
  their deliver_sm sent at once), the same for every client;
- takes commands on a loopback control port, one JSON object a line:
  {"op": "deliver", "from": MOBILE, "to": SHORTCODE, "text": TEXT} pushes a
  mobile-originated deliver_sm (UCS-2) to a bound receiver ("ton" and
  "npi" set the source address's type of number and numbering plan: an
  SMSC may give 8613800138000 as TON 1 international, 13800138000 as 2);
  {"op": "reject", "count": N, "status": S} refuses the next N submits with
  command_status S (not logged: the SMSC did not take them);
  {"op": "receipt_first", "on": true} sends each receipt before the
  submit's answer (as a pipelined SMSC may); {"op": "ping"}.

Run: python -m simkit.smsc --port P --control-port C --log FILE
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import signal
import socket
import sys
import time

import smpp34

RECEIPT = ("id:{id} sub:001 dlvr:001 submit date:{at} done date:{at} "
           "stat:DELIVRD err:000 text:")
MESSAGE_STATE_DELIVERED = 2
# a receipt goes at most this long after its submit was accepted
RECEIPT_DELAY = 0.05


class Smsc:
    """The simulator's state: bound sessions, the receive log, id counter."""

    def __init__(self, host: str, port: int, control_port: int, log_path: str):
        self.server = smpp34.Server(host, port, system_id="SIMSC")
        self.host, self.control_port = host, control_port
        self.log = open(log_path, "a", encoding="utf-8")
        self.sessions: dict[str, smpp34.Esme] = {}
        self.rejects: list[int] = []  # statuses for the next submits to refuse
        self.receipt_first = False  # receipts before the submit's answer
        # receipts not sent yet, by session: (message id, mobile, source) each
        self.receipts_due: dict[str, list[tuple[str, str, str]]] = {}
        # ids unique across restarts of the simulator
        self.ids = itertools.count(int(time.time() * 1000) % 10**9 * 1000)

    async def run(self) -> None:
        """Serve SMPP and the control port until cancelled."""
        await self.server.start()
        control = await asyncio.start_server(self.control, self.host, self.control_port)
        print(f"smsc ready smpp={self.server!r}", flush=True)
        async with control:
            while True:
                event = await self.server.next()
                if isinstance(event, smpp34.Esme):
                    self.sessions[event.session_id] = event
                elif isinstance(event, smpp34.Unbound):
                    self.sessions.pop(event.session_id, None)
                elif isinstance(event, smpp34.SubmitSmEvent):
                    self.submitted(event)

    def submitted(self, event: smpp34.SubmitSmEvent) -> None:
        """Accept, log (before answering: the log is what the SMSC 'has'),
        answer, and schedule a receipt if one was asked for."""
        if self.rejects:
            event.reject(self.rejects.pop(0))
            return
        message_id = f"{next(self.ids):x}"
        self.log.write(json.dumps({
            "at": time.time(), "id": message_id, "session": event.session_id,
            "from": event.source_addr, "to": event.destination_addr,
            "data_coding": event.data_coding, "esm_class": event.esm_class,
            "registered_delivery": event.registered_delivery,
            "sm": event.short_message.hex()}) + "\n")
        self.log.flush()
        if event.registered_delivery & 1 and self.receipt_first:
            asyncio.get_running_loop().create_task(self.receipt_then_accept(event, message_id))
            return
        event.accept(message_id)
        if event.registered_delivery & 1:
            due = self.receipts_due.get(event.session_id)
            if due is None:
                due = self.receipts_due[event.session_id] = []
                asyncio.get_running_loop().call_later(
                    RECEIPT_DELAY, self.send_receipts, event.session_id)
            due.append((message_id, event.destination_addr, event.source_addr))

    def send_receipts(self, session_id: str) -> None:
        """The receipts due on `session_id`, sent together."""
        due = self.receipts_due.pop(session_id, [])
        esme = self.sessions.get(session_id)
        if esme is None or not esme.can_receive:
            return
        at = dt.datetime.now().strftime("%y%m%d%H%M")
        sends, ids = [], []
        for message_id, mobile, source in due:
            try:
                sends.append(esme.deliver_sm(
                    source, RECEIPT.format(id=message_id, at=at).encode(), source_addr=mobile,
                    esm_class=0x04, tlvs=self.receipt_tlvs(message_id)))
                ids.append(message_id)
            except Exception as exc:  # the session is going away: lost, as in life
                print(f"smsc receipt for {message_id} not delivered: {exc}", file=sys.stderr)
        asyncio.ensure_future(self.answered(sends, ids))

    @staticmethod
    def receipt_tlvs(message_id: str) -> list[smpp34.Tlv]:
        return [smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\0"),
                smpp34.Tlv(smpp34.TLV_MESSAGE_STATE, bytes([MESSAGE_STATE_DELIVERED]))]

    @staticmethod
    async def answered(sends: list, message_ids: list[str]) -> None:
        """Wait for a batch of receipts' answers; say which were lost."""
        for message_id, result in zip(message_ids,
                                      await asyncio.gather(*sends, return_exceptions=True)):
            if isinstance(result, Exception):  # the session went away meanwhile: lost, as in life
                print(f"smsc receipt for {message_id} not delivered: {result}", file=sys.stderr)

    async def receipt_then_accept(self, event, message_id: str) -> None:
        """The receipt before the submit's answer, as a pipelined SMSC may."""
        await self.receipt(event.session_id, message_id, event.destination_addr,
                           event.source_addr)
        event.accept(message_id)

    async def receipt(self, session_id: str, message_id: str, mobile: str, source: str) -> None:
        """A delivery receipt for `message_id` now, alone."""
        esme = self.sessions.get(session_id)
        if esme is None or not esme.can_receive:
            return
        at = dt.datetime.now().strftime("%y%m%d%H%M")
        await self.answered([esme.deliver_sm(
            source, RECEIPT.format(id=message_id, at=at).encode(), source_addr=mobile,
            esm_class=0x04, tlvs=self.receipt_tlvs(message_id))], [message_id])

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One JSON command a line, one JSON answer a line."""
        while line := await reader.readline():
            try:
                command = json.loads(line)
                answer = await self.command(command)
            except Exception as exc:
                answer = {"ok": False, "error": str(exc)}
            writer.write((json.dumps(answer) + "\n").encode())
            await writer.drain()
        writer.close()

    async def command(self, command: dict) -> dict:
        """Run one control command."""
        if command.get("op") == "ping":
            return {"ok": True, "sessions": len(self.sessions)}
        if command.get("op") == "receipt_first":
            self.receipt_first = bool(command.get("on", True))
            return {"ok": True}
        if command.get("op") == "reject":
            self.rejects.extend([int(command["status"])] * int(command.get("count", 1)))
            return {"ok": True}
        if command.get("op") == "deliver":
            for esme in list(self.sessions.values()):
                if esme.can_receive:
                    resp = await esme.deliver_sm(
                        command.get("to", ""), command["text"].encode("utf-16-be"),
                        source_addr=command["from"], data_coding=8,
                        source_addr_ton=int(command.get("ton", 0)),
                        source_addr_npi=int(command.get("npi", 0)))
                    return {"ok": resp.command_status == 0, "status": resp.command_status}
            return {"ok": False, "error": "no bound receiver"}
        return {"ok": False, "error": f"unknown op {command.get('op')!r}"}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m simkit.smsc")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--log", required=True, help="JSON lines of accepted submit_sm")
    args = parser.parse_args(argv)

    async def serve():
        smsc = Smsc(args.host, args.port, args.control_port, args.log)
        task = asyncio.ensure_future(smsc.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await smsc.server.stop()
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())


class SmscProcess:
    """The simulator as a child process on free loopback ports: start, kill
    (as if the SMSC crashed), restart on the same ports, read its log, and
    inject a mobile's message. The log survives restarts."""

    def __init__(self, workdir, port: int | None = None):
        from pathlib import Path

        from simkit.sipp import free_port
        self.workdir = Path(workdir)
        self.port = port or free_port(kind=socket.SOCK_STREAM)
        self.control_port = free_port(kind=socket.SOCK_STREAM)
        self.log_path = self.workdir / "smsc-received.jsonl"
        self.proc = None

    def start(self) -> SmscProcess:
        """Start and wait until it answers on the control port."""
        import subprocess
        with open(self.workdir / "smsc.err", "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "simkit.smsc", "--port", str(self.port),
                 "--control-port", str(self.control_port), "--log", str(self.log_path)],
                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.command({"op": "ping"})
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the SMSC simulator did not start: see "
                                       f"{self.workdir / 'smsc.err'}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the SMSC vanishes without unbinding."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def command(self, command: dict) -> dict:
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as conn:
            conn.sendall((json.dumps(command) + "\n").encode())
            return json.loads(conn.makefile().readline())

    def deliver(self, mobile: str, text: str, to: str = "10658", ton: int = 0,
                npi: int = 0) -> dict:
        """A message from `mobile` to the bound gateway (deliver_sm), its
        address of type `ton` in numbering plan `npi` (0: unknown)."""
        return self.command({"op": "deliver", "from": mobile, "to": to, "text": text,
                             "ton": ton, "npi": npi})

    def received(self) -> list[dict]:
        """Every submit_sm the SMSC accepted, in order, across restarts."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def texts(self) -> dict[str, list[str]]:
        """The messages the SMSC accepted, per recipient, in order, long ones
        joined by their UDH (concatenation reference and count)."""
        from smsgw import encoding
        parts: dict[tuple[str, int], list] = {}
        texts: dict[str, list[str]] = {}
        for got in self.received():
            sm = bytes.fromhex(got["sm"])
            piece = (got["data_coding"], got["esm_class"], sm)
            if got["esm_class"] & encoding.ESM_CLASS_UDHI:
                key, total = (got["to"], sm[3]), sm[4]
                parts.setdefault(key, []).append(piece)
                if len(parts[key]) < total:
                    continue
                piece_list = parts.pop(key)
            else:
                piece_list = [piece]
            texts.setdefault(got["to"], []).append(encoding.join(piece_list))
        return texts
