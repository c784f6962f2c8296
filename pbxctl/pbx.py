"""Provide a running Asterisk: `khhf pbx build|up|down|status`.

A system-installed Asterisk 20+ is used where one exists. Otherwise Asterisk
runs from a Debian sid root (Debian 12 has no asterisk package), built once
with mmdebstrap and cached outside the repository. The instance's run
directory (rendered config, spool, logs, recordings) lives on the host and
is bind-mounted into the root, so two instances with different names and
ports can run at once.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import glob
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import amiclient
from khhf import numbering
from khhf.channel_vars import TRUNK_ENDPOINT
from khhf.cluster import require_postgresql
from khhf.config import Settings, agi_key
from khhf.shipped import shipped

ASTERISK_CONF_DIR = shipped("asterisk")
SID_PACKAGES = "asterisk,asterisk-modules,asterisk-core-sounds-en-gsm"
MIN_SYSTEM_VERSION = 20
# Asterisk runs as this user (inside its root: that root's user), never as
# root; it owns only the directories it writes (WRITABLE_DIRS)
PBX_USER = "asterisk"
# ... and, for Asterisk in the sid root, the host account whose ids that
# user has inside the root (pbx_owner): its own, shared with no service
HOST_PBX_USER = "khhf-pbx"
# the prompts' language directory under asterisk/sounds/ (and the run directory)
SOUNDS_SUBDIR = "sounds/zh"
WRITABLE_DIRS = ("spool", "log", "run", "lib", "cache", "recordings")


class PbxError(Exception):
    """Something stops the PBX from running; the message says what to do."""


def phone_password(settings: Settings, extension: str) -> str:
    """The SIP password of a desk phone, derived from phone_secret.

    Derived rather than stored, so the database holds no SIP secrets and
    `khhf pbx phones` can print them for provisioning at any time.
    """
    secret = settings.require("phone_secret").encode()
    return hmac.new(secret, f"desk:{extension}".encode(), hashlib.sha256).hexdigest()[:20]


def sip_timers(settings: Settings) -> dict[str, int]:
    """PJSIP's T1 and timer B in ms from trunk_response_seconds: Asterisk
    raises timer B to 64 x T1 when set lower, so T1 is chosen for it (at
    least 100 ms: below that retransmissions would flood a slow link)."""
    b_ms = max(1, settings.trunk_response_seconds) * 1000
    t1_ms = max(100, min(500, b_ms // 64))
    return {"SIP_TIMER_RETRANSMIT_MS": t1_ms, "SIP_TIMER_TIMEOUT_MS": max(b_ms, 64 * t1_ms)}


def trunk_tokens(settings: Settings) -> dict[str, object]:
    """Where the node's trunk endpoint is, and what identifies it: the
    carrier by its IP, or, behind a SIP edge (docs/cluster.md), the edge's
    carrier-side socket by IP and port, so the edge's other traffic (its
    calls from desk phones' side) is never taken for the carrier."""
    s = settings
    if not s.edge_host:
        return {"TRUNK_HOST": s.trunk_host, "TRUNK_PORT": s.trunk_port,
                "TRUNK_MATCH": s.trunk_host}
    require_postgresql(s, f"PBX node {s.pbx_name!r} behind the SIP edge (edge_host is set)")
    return {"TRUNK_HOST": s.edge_inner, "TRUNK_PORT": s.edge_carrier_side_port,
            "TRUNK_MATCH": f"{s.edge_inner}:{s.edge_carrier_side_port}"}


def debian_mirror() -> str:
    """The Debian archive URI this machine's apt already uses."""
    candidates = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"]
    for path in candidates:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for uri in re.findall(r"(?:URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            if "security" not in uri and uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


def _system_asterisk() -> str | None:
    exe = shutil.which("asterisk")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Asterisk (\d+)", out)
    return exe if m and int(m.group(1)) >= MIN_SYSTEM_VERSION else None


def write_hosts(root: Path) -> None:
    """Give the root an /etc/hosts: without it Asterisk asks an unreachable
    resolver for the host name on every call (call set-up took >500 ms)."""
    host = socket.gethostname()
    (root / "etc" / "hosts").write_text(
        f"127.0.0.1\tlocalhost {host}\n::1\tlocalhost ip6-localhost ip6-loopback\n")


def _entries(path: Path) -> list[list[str]]:
    try:
        return [line.split(":") for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def _account(root: Path | None, name: str) -> tuple[int, int] | None:
    """(uid, gid) of user `name` in the root's /etc/passwd (or the host's)."""
    for fields in _entries((root or Path("/")) / "etc" / "passwd"):
        if len(fields) >= 4 and fields[0] == name:
            return int(fields[2]), int(fields[3])
    return None


def _ids_in_use(root: Path | None) -> tuple[set[int], set[int]]:
    """The uids and gids that the root's (or the host's) accounts use."""
    etc = (root or Path("/")) / "etc"
    uids = {int(f[2]) for f in _entries(etc / "passwd") if len(f) >= 4 and f[2].isdigit()}
    gids = {int(f[3]) for f in _entries(etc / "passwd") if len(f) >= 4 and f[3].isdigit()}
    gids |= {int(f[2]) for f in _entries(etc / "group") if len(f) >= 3 and f[2].isdigit()}
    return uids, gids


def ensure_host_pbx_user(root: Path) -> tuple[int, int]:
    """The host account HOST_PBX_USER that a chrooted Asterisk runs as,
    created (as a system account with its own group) when missing.

    Asterisk inside the root runs under ids that mean something on the host:
    the root's own `asterisk` account got the next free id *of the root*,
    which on a host with PostgreSQL is the host's `postgres`. A dedicated
    host account, with an id free both on the host and in the root, makes
    the PBX a stranger to every other service."""
    found = _account(None, HOST_PBX_USER)
    if found:
        return found
    host_uids, host_gids = _ids_in_use(None)
    root_uids, root_gids = _ids_in_use(root)
    root_own = _account(root, PBX_USER)
    if root_own:  # the root's asterisk keeps its name; its old ids may be reused
        root_uids.discard(root_own[0])
        root_gids.discard(root_own[1])
    free = next((n for n in range(999, 99, -1)
                 if n not in host_uids | root_uids and n not in host_gids | root_gids), None)
    if free is None:
        raise PbxError(f"no system id from 100 to 999 is free both on this host and in the "
                       f"Asterisk root: create the user {HOST_PBX_USER!r} by hand "
                       f"(useradd --system), then `khhf pbx up` again.")
    proc = subprocess.run(
        ["groupadd", "--system", "--gid", str(free), HOST_PBX_USER], capture_output=True, text=True)
    if proc.returncode == 0:
        proc = subprocess.run(
            ["useradd", "--system", "--uid", str(free), "--gid", str(free), "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
             "--comment", "KHHF Asterisk PBX", HOST_PBX_USER], capture_output=True, text=True)
    found = _account(None, HOST_PBX_USER)
    if proc.returncode != 0 or not found:
        raise PbxError(f"cannot create the host user {HOST_PBX_USER!r} "
                       f"({proc.stderr.strip() or 'useradd failed'}): Asterisk does not run as "
                       f"root or as another service's account; create it, then `khhf pbx up` again.")
    return found


def _rewrite_ids(path: Path, name: str, id_field: int, new: dict[int, str]) -> None:
    """Set fields of the line of `name` in a passwd-style file."""
    lines = path.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        fields = line.rstrip("\n").split(":")
        if fields[0] == name:
            for index, value in new.items():
                fields[index] = value
            lines[i] = ":".join(fields) + "\n"
    tmp = path.with_name(f".{path.name}.khhf")
    tmp.write_text("".join(lines))
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)


def map_pbx_user(root: Path, host_ids: tuple[int, int]) -> tuple[int, int]:
    """Give the root's `asterisk` account the host account's ids (Asterisk
    resolves -U/-G in the root's files), and hand it what the old ids
    owned inside the root. Idempotent; returns the ids."""
    uid, gid = host_ids
    current = _account(root, PBX_USER)
    if current is None:
        ensure_pbx_user(root)
        current = _account(root, PBX_USER)
    if current == (uid, gid) and _group_id(root, PBX_USER) == gid:
        return uid, gid
    old_uid, old_gid = current
    old_group = _group_id(root, PBX_USER)
    clash = [f[0] for f in _entries(root / "etc" / "passwd")
             if len(f) >= 4 and f[0] != PBX_USER and f[2] == str(uid)]
    if clash:
        raise PbxError(f"the Asterisk root {root} has an account {clash[0]!r} with the id {uid} "
                       f"of the host's {HOST_PBX_USER!r}: rebuild the root (`khhf pbx build`).")
    _rewrite_ids(root / "etc" / "passwd", PBX_USER, 2, {2: str(uid), 3: str(gid)})
    _rewrite_ids(root / "etc" / "group", PBX_USER, 2, {2: str(gid)})
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            # not the instances' run directories, mounted under khhf/
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "dev", "khhf")]
        for entry in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(entry)
            new_uid = uid if st.st_uid == old_uid else -1
            new_gid = gid if st.st_gid in (old_gid, old_group) else -1
            if new_uid != -1 or new_gid != -1:
                os.chown(entry, new_uid, new_gid, follow_symlinks=False)
    return uid, gid


def _group_id(root: Path, name: str) -> int | None:
    for fields in _entries(root / "etc" / "group"):
        if len(fields) >= 3 and fields[0] == name:
            return int(fields[2])
    return None


def ensure_pbx_user(root: Path | None) -> tuple[int, int]:
    """The (uid, gid) of the account named PBX_USER in the root (or on this
    system), creating it when missing (a stripped root)."""
    found = _account(root, PBX_USER)
    if found:
        return found
    cmd = ["useradd", "--system", "--user-group", "--no-create-home",
           "--home-dir", "/var/lib/asterisk", "--shell", "/usr/sbin/nologin", PBX_USER]
    if root is not None:
        cmd = ["chroot", str(root), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _account(root, PBX_USER)
    if proc.returncode != 0 or not found:
        where = f"the Asterisk root {root}" if root else "this system"
        raise PbxError(f"cannot create the user {PBX_USER!r} in {where} "
                       f"({proc.stderr.strip() or 'useradd failed'}): Asterisk does not run "
                       f"as root; create the user, then `khhf pbx up` again.")
    return found


def pbx_owner(root: Path) -> tuple[int, int]:
    """The ids a chrooted Asterisk runs as: the host's dedicated account,
    mapped into the root."""
    return map_pbx_user(root, ensure_host_pbx_user(root))


def build_root(root: Path, mirror: str | None = None, log=print) -> Path:
    """Build the sid root with Asterisk at `root`, unless it is already there."""
    root = Path(root)
    if (root / "usr" / "sbin" / "asterisk").exists():
        return root
    if os.geteuid() != 0:
        raise PbxError(f"building the Asterisk root at {root} needs root (mmdebstrap, chroot): "
                       f"run `khhf pbx build` as root.")
    if not shutil.which("mmdebstrap"):
        raise PbxError("mmdebstrap is not installed: run `apt-get install mmdebstrap`, "
                       "then `khhf pbx build` again.")
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it
        if (root / "usr" / "sbin" / "asterisk").exists():
            return root
        tmp = root.parent / f".{root.name}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        mirror = mirror or debian_mirror()
        log(f"building the Asterisk root at {root} from {mirror} (about a minute) ...")
        cmd = ["mmdebstrap", "--variant=minbase", "--quiet",
               "--aptopt=Acquire::Check-Valid-Until \"false\"",
               f"--include={SID_PACKAGES}", "sid", str(tmp), mirror]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise PbxError(f"mmdebstrap failed to build the Asterisk root from {mirror}; "
                           f"check that the mirror is reachable (set debian_mirror):\n{tail}")
        write_hosts(tmp)
        ensure_pbx_user(tmp)
        os.rename(tmp, root)
        pbx_owner(root)
    return root


def _port_free(host: str, port: int, kind: int) -> bool:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return True
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise PbxError(f"cannot use {host}:{port}: {exc.strerror}; check sip_host/ami_host.") from None
    finally:
        sock.close()


def render_tokens(text: str, tokens: dict, source: Path | str = "config") -> str:
    """Replace every {{TOKEN}} in `text`; a line with a token whose value is
    a tuple is written once per value (the dialplan's number patterns)."""
    def check(name):
        if name not in tokens:
            raise PbxError(f"{source}: unknown token {{{{{name}}}}} in shipped config.")
        return tokens[name]

    out = []
    for line in text.splitlines(keepends=True):
        names = re.findall(r"\{\{([A-Z_]+)\}\}", line)
        repeated = [n for n in names if isinstance(check(n), tuple)]
        if len(set(repeated)) > 1:
            raise PbxError(f"{source}: one line may repeat over one list token, not {repeated}.")
        values = check(repeated[0]) if repeated else (None,)
        for value in values:
            out.append(re.sub(r"\{\{([A-Z_]+)\}\}",
                              lambda m: str(value if m.group(1) in repeated else check(m.group(1))),
                              line))
    return "".join(out)


@dataclass
class Layout:
    """Where things are, outside (host) and inside (as Asterisk sees them)."""
    root: Path | None          # the sid root, or None for a system Asterisk
    run_dir: Path              # host path of the instance's run directory
    inner_dir: str             # the same directory as Asterisk sees it
    executable: str
    owner: tuple[int, int] | None = None   # (uid, gid) Asterisk runs as; None: as we are

    @property
    def config_file(self) -> str:
        return f"{self.inner_dir}/etc/asterisk.conf"

    def command(self, *args: str, as_user: bool = False) -> list[str]:
        base = [self.executable, "-C", self.config_file, *args]
        if as_user and self.owner is not None:
            # Asterisk resolves the names in the root's /etc/passwd and drops
            # to them before it loads a module or opens a port
            base += ["-U", PBX_USER, "-G", PBX_USER]
        return ["chroot", str(self.root), *base] if self.root else base


class Pbx:
    """One Asterisk instance, named settings.pbx_name, on settings' ports."""

    def __init__(self, settings: Settings, desk_extensions=None):
        self.settings = settings
        self.desk_extensions = list(desk_extensions or [])
        self.run_dir = settings.pbx_dir
        self.pid_file = self.run_dir / "asterisk.pid"
        self.log_file = self.run_dir / "log" / "console.log"

    # -- where Asterisk is ---------------------------------------------------
    def layout(self) -> Layout:
        system = _system_asterisk()
        if system:
            owner = _account(None, PBX_USER) if os.geteuid() == 0 else None
            return Layout(None, self.run_dir, str(self.run_dir), system, owner)
        root = self.settings.asterisk_root
        if not (root / "usr" / "sbin" / "asterisk").exists():
            raise PbxError(f"no Asterisk found: the Asterisk root {root} is missing and "
                           f"the system has no Asterisk {MIN_SYSTEM_VERSION}+; run "
                           f"`khhf pbx build` (as root) or set asterisk_root.")
        if os.geteuid() != 0:
            raise PbxError(f"running Asterisk from the root {root} needs root "
                           f"(chroot and bind mounts): run `khhf pbx` as root.")
        return Layout(root, self.run_dir, f"/khhf/{self.settings.pbx_name}", "/usr/sbin/asterisk",
                      pbx_owner(root))

    def _mount_point(self, layout: Layout) -> Path | None:
        return None if layout.root is None else layout.root / "khhf" / self.settings.pbx_name

    # -- config --------------------------------------------------------------
    def render(self, layout: Layout) -> None:
        """Render asterisk/ into <run_dir>/etc, replacing {{TOKENS}}."""
        s = self.settings
        modules = "/usr/lib/asterisk/modules"
        base = layout.root or Path("/")
        found = sorted(glob.glob(str(base / "usr/lib/*/asterisk/modules"))) \
            + sorted(glob.glob(str(base / "usr/lib/asterisk/modules")))
        if found:
            modules = "/" + str(Path(found[0]).relative_to(base))
        tokens = {
            "DIR": layout.inner_dir, "MODULES_DIR": modules, "DATA_DIR": "/usr/share/asterisk",
            "SIP_HOST": s.sip_host, "SIP_PORT": s.sip_port,
            "AMI_HOST": s.ami_host, "AMI_PORT": s.ami_port,
            "AMI_USER": s.ami_user, "AMI_SECRET": s.require("ami_secret"),
            "RTP_START": s.rtp_start, "RTP_END": s.rtp_end,
            **trunk_tokens(s), "TRUNK": TRUNK_ENDPOINT,
            "TRUNK_QUALIFY_SECONDS": max(0, s.trunk_qualify_seconds),
            **sip_timers(s),
            "AGI_HOST": s.agi_host, "AGI_PORT": s.agi_port, "AGI_KEY": agi_key(s),
            **numbering.dialplan_tokens(),
            "DESK_EXTENSION_PATTERN": numbering.DESK_EXTENSION_DIALPLAN,
            "TIMEZONE": s.timezone,
            # unique ids unique across the nodes of one database (asterisk.conf)
            "SYSTEM_NAME": f"systemname = {s.pbx_name}" if s.edge_host else "",
            "SOUNDS": f"{layout.inner_dir}/{SOUNDS_SUBDIR}",
            **{key.upper(): getattr(s, key) for key in (
                "manager_ring_seconds", "customer_ring_seconds", "hotline_desk_ring_seconds",
                "hotline_mobile_ring_seconds", "hotline_group_ring_seconds",
                "hotline_hunt_ring_seconds")},
        }
        etc = self.run_dir / "etc"
        if etc.exists():
            shutil.rmtree(etc)
        for src in sorted(ASTERISK_CONF_DIR.rglob("*.conf")):
            text = src.read_text(encoding="utf-8")
            dest = etc / src.relative_to(ASTERISK_CONF_DIR)
            dest.parent.mkdir(parents=True, exist_ok=True)
            old_style = re.search(r"@[A-Z_]+@", text)
            if old_style:
                raise PbxError(f"{src}: {old_style.group(0)} is not a token; write "
                               f"{{{{{old_style.group(0).strip('@')}}}}}.")
            dest.write_text(render_tokens(text, tokens, src), encoding="utf-8")
        phones = ["; generated by khhf pbx from the managers' desk extensions\n"]
        for ext in self.desk_extensions:
            if not numbering.DESK_EXTENSION.fullmatch(ext):
                raise PbxError(f"desk extension {ext!r} is not four digits 2000-9999: fix it "
                               f"on the manager's page.")
            # behind an edge the phone registers there: the node reaches it
            # through the edge, which finds where it registered
            contact = (f"contact = sip:{ext}@{s.edge_inner}:{s.edge_phone_side_port}\n"
                       if s.edge_host else "")
            phones.append(f"[{ext}](desk-phone)\nauth = {ext}\naors = {ext}\n"
                          f"callerid = <{ext}>\n\n"
                          f"[{ext}](desk-phone-auth)\nusername = {ext}\n"
                          f"password = {phone_password(s, ext)}\n\n"
                          f"[{ext}](desk-phone-aor)\n{contact}\n")
        dest = etc / "pjsip.d" / "50-desk-phones.conf"
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(phones))
        self._copy_sounds()
        for sub_dir in ("spool", "log/cel-custom", "log/cdr-custom", "run", "lib/keys", "cache",
                        "recordings"):
            (self.run_dir / sub_dir).mkdir(parents=True, exist_ok=True)
        self._set_permissions(layout)

    def _copy_sounds(self) -> None:
        """Copy the shipped prompts (asterisk/sounds/) into the run directory,
        where Asterisk sees them at {{SOUNDS}} (inside its root when chrooted).
        Not secret: readable by all, like Asterisk's own sounds. Each file is
        replaced whole (rename), and only when it changed: a running PBX
        (render again for the phones) may be playing one."""
        src_dir, dest_dir = ASTERISK_CONF_DIR / "sounds", self.run_dir / "sounds"
        wanted = {p.relative_to(src_dir) for p in src_dir.rglob("*") if p.is_file()}
        for rel in sorted(wanted):
            src, dest = src_dir / rel, dest_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            data = src.read_bytes()
            if dest.is_file() and dest.read_bytes() == data:
                continue
            tmp = dest.with_name(f".{dest.name}.new")
            tmp.write_bytes(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        for path in dest_dir.rglob("*"):
            if path.is_file() and path.relative_to(dest_dir) not in wanted:
                path.unlink()

    def _set_permissions(self, layout: Layout) -> None:
        """Asterisk reads its configuration (root's, group-readable: it holds
        the AMI secret, the phones' passwords, the AGI key) and owns only the
        directories it writes."""
        etc = self.run_dir / "etc"
        if layout.owner is None:
            os.chmod(etc / "manager.conf", 0o600)
            os.chmod(etc / "pjsip.d" / "50-desk-phones.conf", 0o600)
            return
        uid, gid = layout.owner
        for path in [etc, *etc.rglob("*")]:
            os.chown(path, 0, gid)
            os.chmod(path, 0o750 if path.is_dir() else 0o640)
        for name in WRITABLE_DIRS:
            top = self.run_dir / name
            if top.stat().st_uid == uid and all(p.stat().st_uid == uid for p in top.iterdir()):
                continue  # already Asterisk's: no walk through every recording
            for dirpath, dirnames, filenames in os.walk(top):
                for entry in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                    os.chown(entry, uid, gid, follow_symlinks=False)

    # -- life cycle ------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def check_ports(self) -> None:
        s = self.settings
        if not _port_free(s.sip_host, s.sip_port, socket.SOCK_DGRAM):
            raise PbxError(f"SIP port {s.sip_host}:{s.sip_port}/udp is already in use by another "
                           f"program: stop it, or choose another port with KHHF_SIP_PORT.")
        if not _port_free(s.ami_host, s.ami_port, socket.SOCK_STREAM):
            raise PbxError(f"AMI port {s.ami_host}:{s.ami_port}/tcp is already in use by another "
                           f"program: stop it, or choose another port with KHHF_AMI_PORT.")

    def up(self, timeout: float = 60.0) -> int:
        """Start Asterisk (if not running) and wait for FullyBooted; return its pid."""
        pid = self.pid()
        if pid:
            return pid
        trunk_tokens(self.settings)  # a node behind an edge refuses SQLite first
        layout = self.layout()
        self.check_ports()
        self.render(layout)
        mount = self._mount_point(layout)
        if mount is not None:
            write_hosts(layout.root)
            self._unmount(mount)
            mount.mkdir(parents=True, exist_ok=True)
            # recursive: a disk mounted on the run directory's recordings/ (their own
            # volume, so they cannot fill the disk the logs are on) is what Asterisk sees
            subprocess.run(["mount", "--rbind", str(self.run_dir), str(mount)], check=True)
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(layout.command("-f", "-n", as_user=True), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._proc = proc  # keep it: reaped in down() when this process started it
        self.pid_file.write_text(f"{proc.pid}\n")
        s = self.settings
        try:
            asyncio.run(amiclient.wait_fully_booted(s.ami_host, s.ami_port, s.ami_user,
                                              s.require("ami_secret"), timeout=timeout))
        except amiclient.AmiError as exc:
            if proc.poll() is not None:
                tail = self.log_tail()
                self.down()
                raise PbxError(f"Asterisk exited at start (code {proc.returncode}); "
                               f"its last words:\n{tail}") from None
            self.down()
            raise PbxError(str(exc)) from None
        return proc.pid

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for path in (self.log_file, self.run_dir / "log" / "messages.log"):
            if path.exists():
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def down(self, timeout: float = 15.0) -> bool:
        """Stop Asterisk and unmount; True if it was running."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._alive(pid):
                time.sleep(0.05)
            if self._alive(pid):
                os.kill(pid, signal.SIGKILL)
                while self._alive(pid):
                    time.sleep(0.05)
        try:
            layout = self.layout()
        except PbxError:
            layout = None
        if layout is not None:
            mount = self._mount_point(layout)
            if mount is not None:
                self._unmount(mount)
        self.pid_file.unlink(missing_ok=True)
        proc = getattr(self, "_proc", None)
        if proc is not None:
            proc.wait()
            self._proc = None
        return pid is not None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    def _unmount(self, mount: Path) -> None:
        mounted = any(line.split()[1] == str(mount)
                      for line in Path("/proc/mounts").read_text().splitlines()
                      if len(line.split()) > 1)
        if not mounted:
            return
        proc = subprocess.run(["umount", "--recursive", str(mount)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise PbxError(f"another Asterisk named {self.settings.pbx_name!r} is using {mount} "
                           f"({proc.stderr.strip() or 'busy'}): stop it with its own config "
                           f"(`khhf pbx down`), or give this one another pbx_name.")

    def cli(self, command: str, timeout: float = 10.0) -> str:
        """Run an Asterisk CLI command over the control socket (root only)."""
        proc = subprocess.run(self.layout().command("-rx", command), capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise PbxError(f"Asterisk CLI {command!r} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def restart_gracefully(self) -> subprocess.Popen:
        """`core restart gracefully`: Asterisk refuses new calls at once (every
        AMI action then answers "Asterisk is shutting down", which the bridge
        and `status` read), waits for the calls in progress to end, then
        restarts in place (same pid, configuration read again). The CLI
        command returns only then, so it runs on its own: the returned
        process ends when Asterisk restarts."""
        if not self.pid():
            raise PbxError(f"PBX {self.settings.pbx_name!r} is not running: start it with "
                           f"`khhf pbx up`.")
        return subprocess.Popen(self.layout().command("-rx", "core restart gracefully"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def rendered_phones(self) -> set[str]:
        """The desk extensions the running configuration has."""
        try:
            text = (self.run_dir / "etc" / "pjsip.d" / "50-desk-phones.conf").read_text()
        except OSError:
            return set()
        return set(re.findall(r"^\[(\d{4})\]\(desk-phone\)", text, re.M))

    def reload_phones(self, desk_extensions) -> None:
        """Render the desk phones again and make PJSIP read them."""
        self.desk_extensions = list(desk_extensions)
        self.render(self.layout())
        self.cli("module reload res_pjsip.so")

    def add_phones(self, desk_extensions) -> set[str]:
        """Give the running PBX the desk phones in `desk_extensions` that its
        configuration lacks (a manager added since it started), so they can
        register at once; return those added. Only adds: a removed phone goes
        at `khhf pbx reload` or a restart, never under a live call."""
        have = self.rendered_phones()
        missing = set(desk_extensions) - have
        if missing:
            self.reload_phones(sorted(have | missing))
        return missing

    def status(self) -> str:
        """One line on the instance's health; raises PbxError if it is down."""
        s = self.settings
        pid = self.pid()
        if not pid:
            raise PbxError(f"PBX {s.pbx_name!r} is not running: start it with `khhf pbx up`.")

        async def probe():
            client = amiclient.AmiClient(s.ami_host, s.ami_port, s.ami_user,
                                         s.require("ami_secret"), event_mask="off")
            await client.connect()
            try:
                return await client.action({"Action": "CoreSettings"})
            finally:
                client.close()
        try:
            settings = asyncio.run(probe())
        except amiclient.AmiError as exc:
            raise PbxError(str(exc)) from None
        if amiclient.shutting_down(settings):
            return (f"PBX {s.pbx_name!r}: Asterisk shutting down gracefully (pid {pid}): the "
                    f"calls in progress go on, new calls are refused until it is back.")
        version = settings.get("AsteriskVersion", "?")
        return (f"PBX {s.pbx_name!r}: Asterisk {version} running (pid {pid}); SIP on "
                f"{s.sip_host}:{s.sip_port}/udp, AMI on {s.ami_host}:{s.ami_port}.")
