"""SIPp parties: simulated desk phones, the carrier trunk and callers.

Used by the tests (tests/harness.py) and by the demo, which has no real
phones: each `Sipp` is one SIPp process playing one party, with RTP audio,
whose message trace can be read back to see exactly what it received.
Scenarios live in simkit/scenarios/.
"""

from __future__ import annotations

import array
import itertools
import math
import re
import shutil
import socket
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

SIPP_DIR = Path(__file__).resolve().parent / "scenarios"
SIPP = shutil.which("sipp")
_ports = itertools.count(0)


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_DGRAM, span: int = 1) -> int:
    """A port free on `host` for UDP and TCP (and the `span - 1` after it)."""
    for _ in range(200):
        sock = socket.socket(socket.AF_INET, kind)
        sock.bind((host, 0))
        port = sock.getsockname()[1]
        sock.close()
        if port + span >= 65000:
            continue
        ok = True
        for p in range(port, port + span):
            for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, k)
                try:
                    s.bind((host, p))
                except OSError:
                    ok = False
                finally:
                    s.close()
        if ok:
            return port
    raise RuntimeError("no free port found")


def mulaw_encode(sample: int) -> int:
    """G.711 mu-law encoding of one 16-bit linear sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    sample = min(abs(sample), clip) + bias
    exponent = max(0, int(math.log2(sample)) - 7)
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def write_tone(path: Path, seconds: float = 2.0, freq: float = 440.0) -> None:
    """A warbling tone as headerless 8 kHz mu-law, for SIPp's rtp_stream."""
    samples = int(8000 * seconds)
    data = bytes(mulaw_encode(int(8000 * math.sin(2 * math.pi * (freq + 60 * math.sin(i / 800)) * i / 8000)))
                 for i in range(samples))
    path.write_bytes(data)


def wav_stats(path: Path) -> tuple[float, float]:
    """(duration in seconds, RMS level of 16-bit samples) of a PCM WAV file."""
    with wave.open(str(path)) as w:
        frames = w.readframes(w.getnframes())
        duration = w.getnframes() / w.getframerate()
        width = w.getsampwidth()
    assert width == 2, f"{path} is not 16-bit PCM"
    count = len(frames) // 2
    if not count:
        return duration, 0.0
    pcm = array.array("h", frames)
    rms = math.sqrt(sum(s * s for s in pcm) / count)
    return duration, rms


@dataclass
class SipMessage:
    direction: str   # "sent" or "received"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def method(self) -> str | None:
        m = re.match(r"([A-Z]+) sip:", self.first_line)
        return m.group(1) if m else None

    @property
    def status(self) -> int | None:
        m = re.match(r"SIP/2.0 (\d{3})", self.first_line)
        return int(m.group(1)) if m else None

    def header(self, name: str) -> str | None:
        for line in self.text.split("\n")[1:]:
            if not line.strip():
                break
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


class Sipp:
    """One SIPp process: a desk phone, the trunk, or a calling customer."""

    def __init__(self, scenario: str, workdir: Path, *, local_ip: str, port: int,
                 remote: str | None = None, service: str | None = None,
                 auth: tuple[str, str] | None = None, keys: dict | None = None,
                 duration_ms: int | None = None, calls: int | None = 1, rate: float | None = None,
                 max_concurrent: int | None = None, fill: dict | None = None,
                 run_limit: str | None = "120s"):
        self.name = f"{Path(scenario).stem}-{local_ip}-{port}-{next(_ports)}"
        self.workdir = Path(workdir) / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_tone(self.workdir / "audio.ulaw")
        self.message_file = self.workdir / "messages.log"
        self.error_file = self.workdir / "errors.log"
        self.local_ip, self.port = local_ip, port
        args = [SIPP]
        if remote:
            args.append(remote)
        scenario_path = SIPP_DIR / scenario
        if fill:
            # SIPp parses some fields (a response's status code) when it loads
            # the scenario, before any [key] is substituted: fill them in here
            text = scenario_path.read_text()
            for name, value in fill.items():
                text = text.replace(f"@{name}@", str(value))
            scenario_path = self.workdir / scenario
            scenario_path.write_text(text)
        args += ["-sf", str(scenario_path), "-i", local_ip, "-p", str(port),
                 "-mi", local_ip, "-mp", str(free_port(local_ip, span=4)),
                 "-cp", str(free_port(local_ip)),
                 "-nostdin", "-trace_msg", "-trace_err",
                 "-message_file", str(self.message_file), "-error_file", str(self.error_file),
                 "-aa"]
        if run_limit is not None:
            # SIPp's -timeout limits the whole run, not one call: a safety net
            # for tests; the demo's long-lived parties pass None
            args += ["-timeout_error", "-timeout", run_limit]
        if calls is not None:  # None: answer calls until stopped
            args += ["-m", str(calls)]
        if service:
            args += ["-s", service]
        if auth:
            args += ["-au", auth[0], "-ap", auth[1]]
        if duration_ms is not None:
            args += ["-d", str(duration_ms)]
        if rate is not None:
            args += ["-r", str(rate)]
        if max_concurrent is not None:
            args += ["-l", str(max_concurrent)]
        for key, value in (keys or {}).items():
            args += ["-key", key, str(value)]
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self, attempts: int = 3, new_session: bool = False) -> "Sipp":
        """Start SIPp; `new_session` keeps a terminal's Ctrl-C from reaching
        it (the demo stops its children itself, in order)."""
        for attempt in range(attempts):
            self.stdout = open(self.workdir / "stdout.log", "wb")
            self.proc = subprocess.Popen(self.args, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=self.stdout, stderr=subprocess.STDOUT,
                                         start_new_session=new_session)
            time.sleep(0.15)  # let it bind before anyone sends to it
            if self.proc.poll() in (None, 0):
                return self
            self.stdout.close()
            output = self.output()
            if "Unable to bind" not in output or attempt == attempts - 1:
                raise RuntimeError(f"sipp {self.name} exited at start: {output}")
            # another process took a control or media port between our pick and
            # SIPp's bind: pick again (the SIP port itself is the caller's)
            self._repick_ports()
        return self

    def _repick_ports(self) -> None:
        local_ip = self.args[self.args.index("-i") + 1]
        self.args[self.args.index("-mp") + 1] = str(free_port(local_ip, span=4))
        self.args[self.args.index("-cp") + 1] = str(free_port(local_ip))

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"sipp {self.name} did not finish in {timeout} s; "
                                 f"messages:\n{self.trace_summary()}") from None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "stdout", None):
            self.stdout.close()

    def output(self) -> str:
        parts = []
        for f in (self.workdir / "stdout.log", self.error_file):
            if f.exists():
                parts.append(f.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def messages(self) -> list[SipMessage]:
        if not self.message_file.exists():
            return []
        text = self.message_file.read_text(errors="replace").replace("\r\n", "\n")
        out = []
        for block in re.split(r"^-{20,}.*$", text, flags=re.M):
            m = re.match(r"\s*\S+ message (sent|received)[^\n]*\n\n?(.*)", block, re.S)
            if m:
                out.append(SipMessage(m.group(1), m.group(2).strip("\n")))
        return out

    def received(self, method_or_status) -> list[SipMessage]:
        return [m for m in self.messages() if m.direction == "received"
                and (m.method == method_or_status or m.status == method_or_status)]

    def trace_summary(self) -> str:
        return "\n".join(f"{m.direction:8} {m.first_line}" for m in self.messages()) \
            or self.output()


def register_desk_phone(settings, extension: str, port: int, workdir: Path,
                        expires: int = 3600, remote: str | None = None) -> Sipp:
    """Register desk phone `extension` from 127.0.0.1:`port` with the PBX of
    `settings`, or with `remote` (the SIP edge), by digest auth with its
    derived password; raise if refused."""
    from pbxctl.pbx import phone_password
    reg = Sipp("register.xml", workdir, local_ip="127.0.0.1", port=port,
               remote=remote or f"{settings.sip_host}:{settings.sip_port}", service=extension,
               auth=(extension, phone_password(settings, extension)), keys={"expires": expires},
               run_limit=None)  # wait(20) below bounds it
    try:
        rc = reg.start().wait(20)
    except RuntimeError:  # refused so fast that SIPp was already gone
        rc = None
    if rc != 0:
        raise RuntimeError(f"desk phone {extension} failed to register:\n{reg.trace_summary()}")
    return reg
