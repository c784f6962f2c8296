"""`khhf service install`: run KHHF for real, under systemd.

Eight units, shipped as templates in khhfcli/systemd/: khhf-edge (the SIP edge,
Kamailio, enabled only where edge_nodes is set: docs/cluster.md), khhf-pbx (Asterisk,
forking) and khhf-phones (`khhf pbx sync --every`: new managers' desk phones
into the running PBX), khhf-agi (Type=notify with a watchdog), khhf-bridge
and khhf-web, those ordered after the PBX, khhf-smsgw (the SMS gateway) and
khhf-jobs (timed jobs), which need only the database and the network, and
khhf-health.timer, which runs `khhf status --quiet` (khhf-health.service) every
minute: a red check fails that unit, with what to do in its log. The
daemons log to the journal (its retention applies); Asterisk's own log
files are rotated by khhf-jobs (khhf.log_files). `install` fills in this machine's
virtual environment and config file, writes the units, reloads systemd and
enables and starts them (unless --no-enable).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from khhf import config as config_mod
from khhf.config import ConfigError

UNIT_DIR = Path(__file__).resolve().parent / "systemd"
UNITS = ("khhf-pbx.service", "khhf-phones.service", "khhf-agi.service", "khhf-bridge.service",
         "khhf-web.service", "khhf-smsgw.service", "khhf-jobs.service",
         "khhf-health.service", "khhf-health.timer", "khhf-edge.service")
# the SIP edge runs only on the machine whose config lists the nodes (edge_nodes)
EDGE_UNIT = "khhf-edge.service"
# what `enable --now` starts: the health check runs from its timer, not at boot itself
ENABLED = tuple(unit for unit in UNITS if unit not in ("khhf-health.service", EDGE_UNIT))


def enabled_units(settings: config_mod.Settings) -> tuple[str, ...]:
    """The units `install` enables: ENABLED, and the edge where edge_nodes is set."""
    return ENABLED + ((EDGE_UNIT,) if settings.edge_nodes.strip() else ())


SYSTEM_DIR = Path("/etc/systemd/system")

# The services that only need the database and the config (AGI, bridge, web UI, SMS
# gateway, jobs) see the whole file system read-only except KHHF's state directory.
HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
{read_write}
ProtectHome=read-only
{private_tmp}
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native"""


class ServiceError(Exception):
    """The units cannot be installed; the message says what to do."""


def register(subparsers) -> None:
    p = subparsers.add_parser("service", help="run KHHF under systemd (production)")
    sub = p.add_subparsers(dest="action", required=True)
    i = sub.add_parser("install", help="write the systemd units, enable and start them")
    i.add_argument("--config", dest="unit_config", metavar="PATH",
                   help="the config file the services read (default: khhf's --config, "
                        "$KHHF_CONFIG or /etc/khhf/khhf.conf)")
    i.add_argument("--venv", metavar="PATH", help="KHHF's virtual environment (default: the one running this)")
    i.add_argument("--dest", default=str(SYSTEM_DIR), metavar="DIR",
                   help=f"where to write the units (default {SYSTEM_DIR})")
    i.add_argument("--no-enable", action="store_true",
                   help="only write the units: no daemon-reload, enable or start")
    p.set_defaults(func=cmd_service)


def cmd_service(args) -> int:
    try:
        written = install(venv=args.venv, config_path=args.unit_config or args.config,
                          dest=Path(args.dest),
                          enable=not args.no_enable)
    except ServiceError as exc:
        print(f"khhf service: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    path = args.unit_config or args.config or os.environ.get("KHHF_CONFIG") \
        or config_mod.DEFAULT_CONFIG_PATH
    units = enabled_units(config_mod.load(path, environ={}))
    if args.no_enable:
        print("not enabled; to start them: systemctl daemon-reload && systemctl enable --now "
              + " ".join(units))
    else:
        print("enabled and started: " + " ".join(units))
    return 0


def render(venv: Path, settings: config_mod.Settings) -> dict[str, str]:
    """{unit name: text} with this machine's paths filled in."""
    config_path = Path(settings.config_path).resolve()
    home = Path(settings.home).resolve()
    read_write = [home]
    from khhf.i18n import TRANSLATIONS as translations
    if any(translations.glob("*/LC_MESSAGES/messages.po")):
        # a checkout (editable install): the web UI compiles edited catalogs
        read_write.append(translations)
    # a private /tmp would hide a state directory or environment kept in /tmp
    in_tmp = any(str(p).startswith("/tmp/") for p in (home, config_path, venv))
    hardening = "\n".join(line for line in HARDENING.format(
        read_write="ReadWritePaths=" + " ".join(f"-{p}" for p in read_write),
        private_tmp="" if in_tmp else "PrivateTmp=yes").split("\n") if line)
    values = {"PYTHON": venv / "bin" / "python", "KHHF": venv / "bin" / "khhf",
              "CONFIG": config_path, "PBX_DIR": Path(settings.pbx_dir).resolve(),
              "EDGE_DIR": Path(settings.edge_dir).resolve(),
              "HARDENING": hardening}
    units = {}
    for name in UNITS:
        text = (UNIT_DIR / name).read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", str(value))
        left = re.search(r"\{\{[A-Z_]+\}\}", text)
        if left:
            raise ServiceError(f"{UNIT_DIR / name}: unknown token {left.group(0)} in a shipped "
                               f"unit; fix the template.")
        units[name] = text
    return units


def _check_venv(venv: Path) -> Path:
    venv = venv.resolve()
    for exe in ("python", "khhf"):
        if not os.access(venv / "bin" / exe, os.X_OK):
            raise ServiceError(f"{venv} is not KHHF's virtual environment (no bin/{exe}): "
                               f"pass the one scripts/install made with --venv, e.g. "
                               f"/opt/khhf/venv.")
    return venv


def install(venv: str | None, config_path: str | None, dest: Path, enable: bool) -> list[Path]:
    """Write the units into `dest`; with `enable`, reload systemd and enable --now them."""
    if enable and os.geteuid() != 0:
        raise ServiceError("enabling system services needs root: run `khhf service install` "
                           "as root (or with --no-enable and a --dest you can write).")
    if enable and not Path("/run/systemd/system").is_dir():
        raise ServiceError("this machine is not running systemd (no /run/systemd/system): "
                           "write the units with --no-enable, or run `khhf demo run` instead.")
    venv_path = _check_venv(Path(venv) if venv else Path(sys.prefix))
    path = Path(config_path or os.environ.get("KHHF_CONFIG") or config_mod.DEFAULT_CONFIG_PATH)
    if not path.is_file():
        raise ServiceError(f"the config file {path} does not exist: run `khhf init` first "
                           f"(or pass --config).")
    try:
        settings = config_mod.load(path, environ={})  # the units read the file, not this shell
    except ConfigError as exc:
        raise ServiceError(str(exc)) from None
    units = render(venv_path, settings)
    if enable:
        _compile_catalogs()
    written = []
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name, text in units.items():
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest / name)
            written.append(dest / name)
    except OSError as exc:
        raise ServiceError(f"cannot write the units into {dest}: {exc.strerror}; run as root "
                           f"or choose another --dest.") from None
    if enable:
        _systemctl("daemon-reload")
        _systemctl("enable", "--now", *enabled_units(settings))
    return written


def _compile_catalogs() -> None:
    """Compile the message catalogs now, as root: the web service may not write them."""
    from khhf.i18n import compile_catalogs
    try:
        compile_catalogs()
    except OSError:
        pass  # a wheel ships them compiled, in a directory root may have made read-only


def _systemctl(*args: str) -> None:
    exe = shutil.which("systemctl")
    if exe is None:
        raise ServiceError("systemctl is not installed: install the `systemd` package.")
    proc = subprocess.run([exe, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServiceError(f"`systemctl {' '.join(args)}` failed: "
                           f"{(proc.stderr or proc.stdout).strip()}; see `journalctl -xe`.")
