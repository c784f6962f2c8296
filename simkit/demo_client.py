"""Drive a running `khhf demo run` from outside, as a user would: start it
with free ports, log in to the web UI with the printed password, click 呼叫,
and read call rows back. Shared by the demo tests (and the wheel test)."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from simkit.sipp import free_port


def demo_env(home: Path, **extra) -> dict:
    """Environment for a demo in `home` on free loopback ports (KHHF_*)."""
    rtp = free_port(span=201)
    return dict(os.environ, KHHF_CONFIG=str(home / "khhf.conf"),
                KHHF_PBX_NAME=f"demo{os.getpid()}x{secrets.token_hex(3)}",
                KHHF_SIP_PORT=str(free_port()),
                KHHF_AMI_PORT=str(free_port(kind=socket.SOCK_STREAM)),
                KHHF_RTP_START=str(rtp + rtp % 2), KHHF_RTP_END=str(rtp + 200),
                KHHF_TRUNK_PORT=str(free_port("127.0.0.2")),
                KHHF_AGI_PORT=str(free_port(kind=socket.SOCK_STREAM)),
                KHHF_BRIDGE_PORT=str(free_port(kind=socket.SOCK_STREAM)),
                KHHF_WEB_PORT=str(free_port(kind=socket.SOCK_STREAM)),
                KHHF_CALLING_WINDOW="00:00-24:00", **extra)


class RunningDemo:
    """A `khhf demo run` process and its console output."""

    def __init__(self, command: list[str], home: Path, env: dict, cwd: Path | None = None):
        self.home = home
        self.env = env
        self.console = home / "demo.out"
        self._out = open(self.console, "w")
        self.proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=self._out,
                                     stderr=subprocess.STDOUT)

    def printed(self) -> str:
        return self.console.read_text()

    def wait_for(self, pattern: str, timeout: float = 90, start: int = 0) -> re.Match:
        """Wait until the console (from offset `start`) matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            printed = self.printed()
            m = re.search(pattern, printed[start:])
            if m:
                return m
            assert self.proc.poll() is None, f"the demo exited:\n{printed}"
            assert time.monotonic() < deadline, f"no {pattern!r} on the console:\n{printed}"
            time.sleep(0.2)

    def ready(self) -> "RunningDemo":
        self.wait_for("press Ctrl-C")
        printed = self.printed()
        self.url = re.search(r"KHHF demo: (http://\S+)/", printed).group(1)
        self.passwords = dict(re.findall(r"log in as (\S+)\s+password (\S+)", printed))
        self.phone_ports = {ext: int(port) for ext, port in re.findall(
            r"desk phone (\d+): SIPp on 127\.0\.0\.1:(\d+)", printed)}
        return self

    def wait_pbx_known(self, timeout: float = 60) -> None:
        """Wait until the bridge is connected to Asterisk again and can say
        what it has live (a dial before that is refused with 503)."""
        from khhf import bridge_client, config
        settings = config.load(self.env["KHHF_CONFIG"], environ=self.env)
        deadline = time.monotonic() + timeout
        while True:
            try:
                bridge_client.live(settings, timeout=5)
                return
            except bridge_client.BridgeUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C: stop the demo, return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def children(self) -> dict[int, list[str]]:
        """{pid: argv} of the demo's direct child processes."""
        out = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) != self.proc.pid:
                    continue
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError):
                continue
            out[int(stat.parent.name)] = [a.decode(errors="replace") for a in argv if a]
        return out

    def child_pid(self, *words: str) -> int:
        """The pid of the one child whose argv has all `words` (as arguments
        or as the last part of a path argument)."""
        def has(argv, word):
            return any(arg == word or arg.endswith("/" + word) for arg in argv)
        found = [pid for pid, argv in self.children().items()
                 if all(has(argv, w) for w in words)]
        assert len(found) == 1, (words, self.children())
        return found[0]


class WebUser:
    """A logged-in browser session on the demo's web UI (plain HTTP)."""

    def __init__(self, url: str, username: str, password: str):
        self.url = url
        self.web = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        login = self.web.open(f"{url}/login").read().decode()
        self.home = self.web.open(f"{url}/login", urllib.parse.urlencode(
            {"username": username, "password": password,
             "csrf_token": self.token(login)}).encode()).read().decode()

    @staticmethod
    def token(html: str) -> str:
        return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)

    def dial(self) -> int:
        """Click 呼叫 on the first open task of the home page; the call's id."""
        page = self.web.open(f"{self.url}/").read().decode()
        task_id = re.search(r'data-task="(\d+)"', page).group(1)
        answer = self.web.open(urllib.request.Request(
            f"{self.url}/calls/dial/{task_id}",
            urllib.parse.urlencode({"csrf_token": self.token(page)}).encode(),
            {"Accept": "application/json"}))
        return json.loads(answer.read())["call_id"]
