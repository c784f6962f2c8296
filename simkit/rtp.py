"""A phone's audio, for tests: an RTP endpoint that keeps every packet sent
to it and presses keys as RFC 4733 telephone events.

A SIPp party's answer points its audio here (answer_media.xml,
hotline_listen.xml), so a test can check what a manager or a caller heard:
with G.711 on both ends the PBX sends a prompt file's bytes as they are, so
finding the file's bytes in the payloads proves which prompt played, and
that it played without transcoding. Keys go from the same address the SDP
names, as a phone sends them, so the PBX's strict RTP takes them.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from pathlib import Path

from simkit.sipp import free_port

PCMU, PCMA, TELEPHONE_EVENT = 0, 8, 101   # payload types, as the SDP says
FRAME = 160                         # 20 ms at 8 kHz
_SILENCE = {PCMU: b"\xff" * FRAME, PCMA: b"\xd5" * FRAME}
_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


class RtpPhone:
    """Listens on host:<a free port> until `close()`; `press` sends keys.
    `codec` is the payload type the phone answered with (PCMU or PCMA)."""

    def __init__(self, host: str = "127.0.0.1", codec: int = PCMU):
        self.codec = codec
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()
        self._packets: list[tuple[int, bytes]] = []
        self._peer: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._seq, self._ts = random.randrange(1 << 15), random.randrange(1 << 30)
        self._ssrc = random.randrange(1 << 31)
        self._running = True
        self._thread = threading.Thread(target=self._listen, name=f"rtp-{self.port}",
                                        daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while self._running:
            try:
                data, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(data) > 12 and data[0] >> 6 == 2:   # RTP version 2
                with self._lock:
                    self._peer = peer
                    self._packets.append((data[1] & 0x7F, data[12:]))

    # -- what it heard ---------------------------------------------------------
    def audio(self) -> bytes:
        """Every payload in the phone's codec received, in order."""
        with self._lock:
            return b"".join(p for pt, p in self._packets if pt == self.codec)

    def heard(self, sound: Path, span: int = 1600) -> bool:
        """True when the first `span` bytes (0.2 s) of headerless G.711
        `sound` arrived, byte for byte."""
        return Path(sound).read_bytes()[:span] in self.audio()

    def wait_heard(self, sound: Path, timeout: float = 20) -> bool:
        """Wait (up to `timeout` s) until `sound` was heard; True if it was."""
        deadline = time.monotonic() + timeout
        while not self.heard(sound):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # -- what it says ----------------------------------------------------------
    def _send(self, payload_type: int, payload: bytes, marker: bool = False) -> None:
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type,
                             self._seq & 0xFFFF, self._ts & 0xFFFFFFFF, self._ssrc)
        self.sock.sendto(header + payload, self._peer)
        self._seq += 1

    def press(self, keys: str, tone_ms: int = 160) -> None:
        """Press `keys` (0-9 * #) as RFC 4733 events (RFC 4733 section 2.5:
        one event per key, its duration growing every 20 ms, the end sent
        three times), between bits of silence; returns once they are sent.
        Only once the PBX has sent audio here: that is where it listens."""
        with self._lock:
            if self._peer is None:
                raise RuntimeError("the PBX sent no audio yet: nowhere to send keys")
        for key in keys:
            event = _EVENTS[key]
            for _ in range(5):   # the phone's own audio: silence
                self._send(self.codec, _SILENCE[self.codec])
                self._ts += FRAME
                time.sleep(0.02)
            steps = max(1, tone_ms // 20)
            for i in range(1, steps + 1):
                self._send(TELEPHONE_EVENT, struct.pack("!BBH", event, 10, i * FRAME),
                           marker=i == 1)
                time.sleep(0.02)
            for _ in range(3):
                self._send(TELEPHONE_EVENT, struct.pack("!BBH", event, 0x80 | 10, steps * FRAME))
            self._ts += steps * FRAME

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self.sock.close()


RTP_HEADER = 12
# G.711 mu-law's two codes for silence (+0 and -0)
MULAW_SILENCE = {0xFF, 0x7F}


class RtpSink:
    """A receiver only (the listen-in's supervisor phone,
    simkit/scenarios/listen_phone.xml, gives this port as its media
    address): receive RTP on 127.0.0.1:`port` in a thread until `close()`,
    so a test can say "audio reached the phone" from the packets themselves."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None):
        self.port = port or free_port(host)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, self.port))
        self.sock.settimeout(0.2)
        self.packets: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(2048)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            if len(data) > RTP_HEADER and data[0] >> 6 == 2:  # RTP version 2
                self.packets.append(data)

    def audible(self) -> int:
        """How many packets carry sound (a mu-law payload not all silence)."""
        return sum(1 for p in list(self.packets) if set(p[RTP_HEADER:]) - MULAW_SILENCE)

    def wait_audible(self, count: int, timeout: float = 30) -> int:
        """Wait until `count` packets with sound arrived; raise if they do not."""
        deadline = time.monotonic() + timeout
        while self.audible() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.audible()} RTP packets with sound (of "
                                     f"{len(self.packets)}) reached port {self.port} in "
                                     f"{timeout} s; wanted {count}")
            time.sleep(0.1)
        return self.audible()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
