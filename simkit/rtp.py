"""An RTP receiver for the tests: a UDP socket on loopback that keeps
what a phone would hear, so a test can say "audio reached the phone" from
the packets themselves (the listen-in: simkit/scenarios/listen_phone.xml
gives this port as the phone's media address)."""

from __future__ import annotations

import socket
import threading
import time

from simkit.sipp import free_port

RTP_HEADER = 12
# G.711 mu-law's two codes for silence (+0 and -0)
MULAW_SILENCE = {0xFF, 0x7F}


class RtpSink:
    """Receive RTP on 127.0.0.1:`port` in a thread until `close()`."""

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
