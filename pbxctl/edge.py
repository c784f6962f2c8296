"""The SIP edge: Kamailio in front of several PBX nodes (`khhf edge up|down|status`).

Kamailio comes from Debian 12 (`kamailio`, `kamailio-postgres-modules`).
Its configuration is kamailio/kamailio.cfg, rendered with the settings into
the edge's run directory (<home>/edge) as the PBX's is; it runs as its own
process, as Debian's `kamailio` user. The nodes are the dispatcher's set 1,
in a list file rendered from edge_nodes (the nodes are configuration, like
the trunk: a file needs no table, and `khhf edge up` after a change renders
it again). Registrations are in the shared PostgreSQL (khhf.cluster); the
desk phones' passwords are not: their HA1s are handed to the running edge
over its control socket, as the PBX is handed its phones.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from khhf import numbering
from khhf.cluster import KAMAILIO_SCHEMA, kamailio_db_url, require_postgresql
from khhf.config import ConfigError, Settings
from khhf.shipped import shipped
from pbxctl.pbx import PbxError, _port_free, phone_password, render_tokens

KAMAILIO_CONF_DIR = shipped("kamailio")
KAMAILIO = "/usr/sbin/kamailio"
KAMCMD = "/usr/sbin/kamcmd"
MODULES_DIRS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules")
# Debian's account for Kamailio; the edge never runs as root
EDGE_USER = "kamailio"
# the digest realm the desk phones see at the edge
REALM = "khhf"
# a node must answer an INVITE (100 Trying) or an OPTIONS probe within this,
# else the call fails over and the node is marked down
NODE_TIMEOUT_MS = 1500
PHONE_TIMEOUT_MS = 5000
WORKERS = 4
# the dispatcher's set of PBX nodes
NODE_SET = 1


def ha1(extension: str, password: str) -> str:
    """Digest HA1 of a desk phone at the edge: md5(user:realm:password)."""
    return hashlib.md5(f"{extension}:{REALM}:{password}".encode()).hexdigest()


def _posix_regex(pattern: re.Pattern) -> str:
    """A Python pattern of khhf.numbering as the POSIX ERE Kamailio uses."""
    return pattern.pattern.replace(r"\d", "[0-9]")


class Edge:
    """The Kamailio edge of settings, with the given desk phones."""

    def __init__(self, settings: Settings, desk_extensions=None):
        self.settings = settings
        self.desk_extensions = list(desk_extensions or [])
        self.run_dir = settings.edge_dir
        self.config_file = self.run_dir / "kamailio.cfg"
        self.pid_file = self.run_dir / "kamailio.pid"
        self.log_file = self.run_dir / "kamailio.log"
        self.ctl = f"unix:{self.run_dir}/run/kamailio.ctl"

    # -- config ----------------------------------------------------------------
    def check(self) -> list[tuple[str, int]]:
        """The nodes; raise with one sentence when the edge cannot run as set."""
        s = self.settings
        require_postgresql(s, "the SIP edge")
        if not s.edge_host:
            raise ConfigError("edge_host is not set: give the address the carrier and the desk "
                              "phones send SIP to (KHHF_EDGE_HOST), on the edge and every node.")
        nodes = s.edge_node_list()
        if not nodes:
            raise ConfigError("edge_nodes is empty: list the PBX nodes' SIP addresses on the "
                              "edge, e.g. edge_nodes = 10.0.0.11:5060,10.0.0.12:5060.")
        if not 1 <= s.edge_probe_seconds <= 60:
            raise ConfigError(f"edge_probe_seconds is {s.edge_probe_seconds}: give 1 to 60.")
        if not os.access(KAMAILIO, os.X_OK):
            raise PbxError("Kamailio is not installed: run `apt-get install kamailio "
                           "kamailio-postgres-modules` (scripts/install does), then "
                           "`khhf edge up` again.")
        return nodes

    def render(self) -> None:
        """Render kamailio/ into the run directory (config 0640 root:kamailio:
        it holds the database password)."""
        s = self.settings
        nodes = self.check()
        modules = next((d for d in MODULES_DIRS if Path(d, "tm.so").exists()), MODULES_DIRS[0])
        tokens = {
            "RUN_DIR": self.run_dir, "MODULES_DIR": modules, "CHILDREN": WORKERS,
            "EDGE_HOST": s.edge_host, "EDGE_PORT": s.edge_port, "INNER_HOST": s.edge_inner,
            "CARRIER_SIDE_PORT": s.edge_carrier_side_port,
            "PHONE_SIDE_PORT": s.edge_phone_side_port,
            "TRUNK_HOST": s.trunk_host, "TRUNK_PORT": s.trunk_port,
            "TRUNK_TIMEOUT_MS": max(1, s.trunk_response_seconds) * 1000,
            "NODE_TIMEOUT_MS": NODE_TIMEOUT_MS, "PHONE_TIMEOUT_MS": PHONE_TIMEOUT_MS,
            "PROBE_SECONDS": s.edge_probe_seconds, "DB_URL": kamailio_db_url(s),
            "REALM": REALM,
            "UNIFIED_REGEX": _posix_regex(numbering.UNIFIED_NUMBER),
            "DESK_EXTENSION_REGEX": _posix_regex(numbering.DESK_EXTENSION),
        }
        for sub in ("", "run"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        text = (KAMAILIO_CONF_DIR / "kamailio.cfg").read_text(encoding="utf-8")
        self._write(self.config_file, render_tokens(text, tokens, KAMAILIO_CONF_DIR / "kamailio.cfg"))
        # set id, destination, flags, priority, attributes: the socket the
        # edge sends from (and probes from) is the carrier side, where each
        # node's trunk endpoint knows it
        lines = ["# generated by khhf edge from edge_nodes: the PBX nodes (dispatcher set 1)\n"]
        for number, (host, port) in enumerate(nodes, 1):
            lines.append(f"{NODE_SET} sip:{host}:{port} 0 0 "
                         f"socket=udp:{s.edge_inner}:{s.edge_carrier_side_port};"
                         f"duid=node{number}\n")
        self._write(self.run_dir / "dispatcher.list", "".join(lines))
        owner = self._owner()
        if owner is not None:
            os.chown(self.run_dir / "run", *owner)

    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        owner = self._owner()
        if owner is not None:
            os.chown(tmp, 0, owner[1])
        os.replace(tmp, path)

    @staticmethod
    def _owner() -> tuple[int, int] | None:
        """(uid, gid) of EDGE_USER when we are root (else Kamailio runs as us)."""
        if os.geteuid() != 0:
            return None
        import pwd
        try:
            entry = pwd.getpwnam(EDGE_USER)
        except KeyError:
            raise PbxError(f"the user {EDGE_USER!r} is missing: Debian's kamailio package "
                           f"creates it; reinstall it, then `khhf edge up` again.") from None
        return entry.pw_uid, entry.pw_gid

    # -- life cycle --------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def command(self, *args: str) -> list[str]:
        cmd = [KAMAILIO, "-f", str(self.config_file), "-Y", str(self.run_dir / "run"), *args]
        if self._owner() is not None:
            cmd += ["-u", EDGE_USER, "-g", EDGE_USER]
        return cmd

    def up(self, timeout: float = 30.0) -> int:
        """Start Kamailio (unless running), hand it the desk phones; its pid."""
        pid = self.pid()
        if pid:
            self.load_phones()
            return pid
        s = self.settings
        self.render()
        for host, port in {(s.edge_host, s.edge_port), (s.edge_inner, s.edge_carrier_side_port),
                           (s.edge_inner, s.edge_phone_side_port)}:
            if not _port_free(host, port, socket.SOCK_DGRAM):
                raise PbxError(f"SIP port {host}:{port}/udp of the edge is already in use by "
                               f"another program: stop it, or choose another edge_port.")
        check = subprocess.run(self.command("-c"), capture_output=True, text=True)
        if check.returncode != 0:
            raise PbxError(f"Kamailio refuses the rendered {self.config_file}: "
                           f"{self._last_error(check.stderr)}")
        # Kamailio's tables are in their own schema (khhf.cluster)
        env = {**os.environ, "PGOPTIONS": f"-c search_path={KAMAILIO_SCHEMA}"}
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(self.command("-DD", "-E"), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        self._proc = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise PbxError(f"Kamailio exited at start (code {proc.returncode}); its last "
                               f"words:\n{self.log_tail()}")
            if self._rpc("core.uptime", quiet=True) is not None:
                break
            if time.monotonic() > deadline:
                self.down()
                raise PbxError(f"Kamailio did not answer on {self.ctl} within {timeout:g} s; "
                               f"its log:\n{self.log_tail()}")
            time.sleep(0.1)
        self.load_phones()
        return proc.pid

    def load_phones(self) -> None:
        """Give the running edge the desk phones' HA1s (replacing the old set)."""
        self._rpc("htable.flush", "phones")
        for ext in self.desk_extensions:
            if not numbering.DESK_EXTENSION.fullmatch(ext):
                raise PbxError(f"desk extension {ext!r} is not four digits 2000-9999: fix it "
                               f"on the manager's page.")
            # s: a string (kamcmd would send 8001 as a number)
            self._rpc("htable.sets", "phones", f"s:{ext}",
                      f"s:{ha1(ext, phone_password(self.settings, ext))}")

    def _rpc(self, *args: str, quiet: bool = False) -> str | None:
        """Run a Kamailio RPC command over the control socket; its output.
        quiet: None when the edge does not answer, instead of raising."""
        try:
            proc = subprocess.run([KAMCMD, "-s", self.ctl, *args], capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            if quiet:
                return None
            raise PbxError(f"the edge's control socket {self.ctl} does not answer ({exc}): "
                           f"is it running (`khhf edge status`)?") from None
        if proc.returncode != 0 or proc.stdout.startswith("error:"):
            if quiet:
                return None
            raise PbxError(f"the edge refused `{' '.join(args[:2])}`: "
                           f"{(proc.stderr or proc.stdout).strip()}; see {self.log_file}.")
        return proc.stdout

    @staticmethod
    def _last_error(text: str) -> str:
        lines = [ln for ln in text.splitlines() if "ERROR" in ln or "CRITICAL" in ln]
        return (lines[-1] if lines else text.strip().splitlines()[-1] if text.strip() else "?")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def down(self, timeout: float = 10.0) -> bool:
        """Stop Kamailio; True if it was running."""
        pid = self.pid()
        if pid:
            # Kamailio's main process stops its workers itself
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._alive(pid):
                time.sleep(0.05)
            if self._alive(pid):
                os.killpg(pid, signal.SIGKILL)  # its own session (start_new_session)
        self.pid_file.unlink(missing_ok=True)
        proc = getattr(self, "_proc", None)
        if proc is not None:
            proc.wait()
            self._proc = None
        return pid is not None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    def nodes(self) -> list[tuple[str, str]]:
        """[(node URI, state)] as the dispatcher sees them: state is
        "up" (answers OPTIONS), "down" (does not; probed), or "off"."""
        out = self._rpc("dispatcher.list") or ""
        found = []
        for uri, flags in re.findall(r"URI:\s*(sip:\S+)\s+FLAGS:\s*(\S+)", out):
            state = "up" if flags.startswith("A") else "off" if flags.startswith("D") else "down"
            found.append((uri, state))
        return found

    def status(self) -> str:
        """One line on the edge; raises PbxError when it is down."""
        s = self.settings
        pid = self.pid()
        if not pid:
            raise PbxError("the SIP edge is not running: start it with `khhf edge up`.")
        nodes = self.nodes()
        up = [uri for uri, state in nodes if state == "up"]
        listed = ", ".join(f"{uri} {state}" for uri, state in nodes) or "none"
        return (f"SIP edge: Kamailio running (pid {pid}) on {s.edge_host}:{s.edge_port}/udp; "
                f"{len(up)} of {len(nodes)} PBX nodes answer: {listed}.")
