"""Configuration: defaults in code, then a file, then the environment.

The file is INI with one [khhf] section; its path is $KHHF_CONFIG, else
/etc/khhf/khhf.conf. Every key can be overridden by KHHF_<KEY> in the
environment. Secrets are never defaulted: `khhf init` generates them.
"""

from __future__ import annotations

import configparser
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from khhf import local_time

DEFAULT_CONFIG_PATH = Path("/etc/khhf/khhf.conf")
SECRET_KEYS = ("ami_secret", "secret_key", "phone_secret", "bridge_token")
# settings a backup leaves out unless asked (khhf.backup): the generated
# secrets, and the ones given to us (the SMSC's password; a database URL's
# password is taken out of the URL)
SECRET_SETTINGS = (*SECRET_KEYS, "smsc_password")


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message says what to do."""


@dataclasses.dataclass
class Settings:
    # where KHHF keeps its state: database, PBX run directory, recordings
    home: Path = Path("/var/lib/khhf")
    database_url: str = ""
    # the Debian sid root that carries Asterisk when the system has none
    asterisk_root: Path = Path("/var/cache/khhf/sidroot")
    debian_mirror: str = ""
    # one PBX instance: its name, SIP/AMI/RTP ports on loopback
    pbx_name: str = "main"
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "khhf"
    rtp_start: int = 10000
    rtp_end: int = 10999
    # the carrier trunk: identified by its IP address
    trunk_host: str = "127.0.0.2"
    trunk_port: int = 5060
    # how long the PBX waits for the carrier's first answer to a call (SIP
    # timer B = 64 x T1): silence for this long ends the dial as "carrier
    # unreachable" instead of the RFC's 32 s (khhf/services/trunk.py)
    trunk_response_seconds: int = 8
    # every this many seconds the PBX asks the trunk whether it is there
    # (SIP OPTIONS, "qualify"); a trunk that stops answering is shown down
    # and is not dialed until it answers again. 0: never ask (a carrier
    # that ignores OPTIONS); then only failing calls show the line down
    trunk_qualify_seconds: int = 30
    # the SIP edge (Kamailio, `khhf edge up`, docs/cluster.md) in front of
    # several PBX nodes. Empty edge_host: one node, no edge (the carrier and
    # the phones talk to the PBX itself). Set on every node and on the edge:
    # the carrier and the desk phones send to edge_host:edge_port; the nodes
    # talk to the edge on edge_inner_host (default edge_host) at edge_port+1
    # (the carrier's calls) and edge_port+2 (the desk phones' calls)
    edge_host: str = ""
    edge_port: int = 5060
    edge_inner_host: str = ""
    # on the edge: the nodes' SIP addresses (host:port, comma-separated),
    # the dispatcher's set; OPTIONS probe every edge_probe_seconds
    edge_nodes: str = ""
    edge_probe_seconds: int = 1
    # FastAGI service the dialplan asks for hotline routing
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    # the AMI bridge's local command channel (click-to-dial asks it to originate)
    bridge_host: str = "127.0.0.1"
    bridge_port: int = 4580
    # outbound calling rules (khhf.services.dial_rules): the local hours
    # calls may ring, and per customer number, across all campaigns,
    # managers and unified numbers, at most so many outbound calls in any
    # 24 hours and in any 5 minutes, and this many minutes between calls
    # from different campaigns (unless the customer booked the call-back)
    calling_window: str = "08:00-21:00"
    customer_calls_per_day: int = 5
    customer_calls_per_5min: int = 3
    campaign_gap_minutes: int = 120
    manager_ring_seconds: int = 30
    customer_ring_seconds: int = 45
    # the unified-number pool (khhf.services.number_pool): the caps a number
    # added to a county starts with (0: no cap): outbound calls per local
    # day, per rolling hour, and at once
    number_daily_cap: int = 200
    number_hourly_cap: int = 40
    number_concurrent_cap: int = 2
    # a number going bad: over the last number_watch_days local days, with
    # at least number_watch_min_calls calls, its answer rate below this
    # percentage of its county's is flagged on the pool page
    number_watch_days: int = 3
    number_watch_min_calls: int = 20
    number_watch_percent: int = 60
    # the hotline's ring order: seconds the owner's desk phone, the owner's
    # mobile, the on-duty group (all at once), and each member in turn ring
    hotline_desk_ring_seconds: int = 15
    hotline_mobile_ring_seconds: int = 20
    hotline_group_ring_seconds: int = 20
    hotline_hunt_ring_seconds: int = 10
    # how often the AMI bridge reconciles call rows with Asterisk's CEL record
    reconcile_seconds: int = 10
    # `khhf pbx sync --every` (the khhf-phones unit, the demo) adds new
    # managers' desk phones to the running PBX (1) or not (0)
    sync_desk_phones: int = 1
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    # how many reverse proxies (e.g. nginx terminating HTTPS) stand in front
    # of the web UI; their X-Forwarded-For/-Proto/-Host are trusted only then
    web_proxy_hops: int = 0
    # log-in rate limit, per user name and client address: this many failed
    # log-ins within this many minutes, and further attempts are refused
    login_max_failures: int = 5
    login_failure_minutes: int = 15
    timezone: str = "Asia/Shanghai"
    # the SMS gateway (smsgw/): the SMSC it binds to over SMPP 3.4; with no
    # host the outbox and inbox stay in the database (the embedded default)
    smsc_host: str = ""
    smsc_port: int = 2775
    smsc_system_id: str = "khhf"
    smsc_password: str = ""
    # the sender number (service code) messages go out from
    sms_source_addr: str = "10658"
    # submit_sm PDUs per second the SMSC allows this account
    sms_rate_per_second: int = 10
    # submit attempts before a message is marked failed
    sms_max_attempts: int = 5
    # after an answered outbound call, seconds without a result before the
    # manager's mobile gets the result prompt (khhf/services/sms_feedback.py)
    sms_prompt_delay_seconds: int = 120
    # recordings are kept this many days after the call, then the timed-jobs
    # daemon deletes them (khhf.services.recordings.purge); 0 keeps them forever
    recording_retention_days: int = 0
    # health (khhf.health): below this much free disk where the recordings
    # go, `khhf status` and /healthz turn red
    recordings_min_free_mb: int = 1024
    # the timed-jobs daemon's backup (khhf.backup): with a directory, one
    # archive a day at backup_time (local, HH:MM), the backup_keep newest
    # kept (0 keeps all); no directory, no timed backup
    backup_dir: str = ""
    backup_time: str = "02:30"
    backup_keep: int = 7
    # where pg_dump/pg_restore are; empty: Debian's postgresql-client of the
    # server's major version (/usr/lib/postgresql/N/bin)
    pg_bin_dir: str = ""
    # secrets: generated by `khhf init`, never committed
    ami_secret: str = ""
    secret_key: str = ""
    phone_secret: str = ""
    bridge_token: str = ""
    config_path: Path | None = None

    def __post_init__(self):
        self.home = Path(self.home)
        self.asterisk_root = Path(self.asterisk_root)
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'khhf.db'}"
        if not local_time.is_zone(self.timezone):
            raise ConfigError(f"timezone {self.timezone!r} is not a time zone: give an IANA "
                              "name such as Asia/Shanghai or Asia/Urumqi.")
        try:
            parse_window(self.calling_window)
        except ValueError as exc:
            raise ConfigError(f"{exc}: give the local hours calls may ring, e.g. "
                              "08:00-21:00.") from None
        for key in ("customer_calls_per_day", "customer_calls_per_5min"):
            if not 1 <= getattr(self, key) <= 1000:
                raise ConfigError(f"{key} is {getattr(self, key)}: give a whole number of "
                                  "calls from 1 to 1000.")
        if self.customer_calls_per_5min > self.customer_calls_per_day:
            raise ConfigError(f"customer_calls_per_5min ({self.customer_calls_per_5min}) is "
                              f"more than customer_calls_per_day "
                              f"({self.customer_calls_per_day}): lower it, or raise the "
                              "daily limit.")
        if not 0 <= self.campaign_gap_minutes <= 24 * 60:
            raise ConfigError(f"campaign_gap_minutes is {self.campaign_gap_minutes}: give "
                              "minutes from 0 (no gap) to 1440 (a day).")

    @property
    def calling_hours(self) -> tuple[dt.time, dt.time]:
        """The calling window as (start, end) local times."""
        return parse_window(self.calling_window)

    @property
    def pbx_dir(self) -> Path:
        """The PBX instance's run directory: rendered config, spool, logs."""
        return self.home / "pbx" / self.pbx_name

    @property
    def edge_dir(self) -> Path:
        """The SIP edge's run directory: rendered Kamailio config, pid, log."""
        return self.home / "edge"

    @property
    def edge_inner(self) -> str:
        """The edge's address toward the nodes."""
        return self.edge_inner_host or self.edge_host

    @property
    def edge_carrier_side_port(self) -> int:
        """The edge's port for the nodes' carrier traffic (both ways)."""
        return self.edge_port + 1

    @property
    def edge_phone_side_port(self) -> int:
        """The edge's port for the nodes' calls to desk phones."""
        return self.edge_port + 2

    def edge_node_list(self) -> list[tuple[str, int]]:
        """edge_nodes as [(host, port)]; ConfigError names a bad entry."""
        nodes = []
        for entry in filter(None, (e.strip() for e in self.edge_nodes.split(","))):
            host, sep, port = entry.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"edge_nodes entry {entry!r} is not host:port: give the "
                                  "nodes' SIP addresses, e.g. 10.0.0.11:5060,10.0.0.12:5060.")
            nodes.append((host, int(port)))
        return nodes

    @property
    def recordings_dir(self) -> Path:
        return self.pbx_dir / "recordings"

    def local(self, utc: dt.datetime) -> dt.datetime:
        """A naive UTC time (as the database keeps it) in this site's time zone."""
        return local_time.to_local(utc, self.timezone)

    def from_local(self, local: dt.datetime) -> dt.datetime:
        """A wall-clock time in this site's time zone as naive UTC."""
        return local_time.from_local(local, self.timezone)

    def today(self) -> dt.date:
        """The local day it is now in this site's time zone."""
        return local_time.today(self.timezone)

    def recording_day(self, utc: dt.datetime) -> str:
        """'YYYY/MM/DD' of the local day: the folder a call's recording goes to."""
        return f"{self.local(utc):%Y/%m/%d}"

    def require(self, key: str) -> str:
        value = getattr(self, key)
        if not value:
            where = self.config_path or DEFAULT_CONFIG_PATH
            raise ConfigError(
                f"{key} is not set: run `khhf init` to generate {where}, "
                f"or set KHHF_{key.upper()}.")
        return value


@functools.lru_cache(maxsize=16)
def parse_window(text: str) -> tuple[dt.time, dt.time]:
    """'08:00-21:00' -> (08:00, 21:00); ValueError names the bad part. An
    end of 24:00 is the end of the day (time.max): '00:00-24:00' is all day,
    where '00:00-24:00' would shut the last minute."""
    try:
        start, end = (dt.time.max if part.strip() == "24:00" else
                      dt.time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise ValueError(f"calling_window {text!r} is not like 08:00-21:00 "
                         f"(24:00 may end it)") from None
    if start >= end:
        raise ValueError(f"calling_window {text!r} must start before it ends")
    return start, end


def agi_key(settings: Settings) -> str:
    """The key the dialplan puts in every FastAGI URL and the AGI service
    checks before a route runs: only the PBX, which renders it, knows it.

    Derived from phone_secret (as the desk phones' SIP passwords are), so an
    existing configuration needs no new key; rendered into the PBX's
    configuration only, never logged.
    """
    secret = settings.require("phone_secret").encode()
    return hmac.new(secret, b"fastagi-route-key", hashlib.sha256).hexdigest()[:32]


def _coerce(field: dataclasses.Field, raw: str):
    if field.type in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{field.name} must be a whole number, not {raw!r}.") from None
    if field.type in ("Path", Path):
        return Path(raw)
    return raw


def load(path: str | os.PathLike | None = None, environ=None, **overrides) -> Settings:
    """Read the settings: defaults, then the config file, then KHHF_* variables."""
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get("KHHF_CONFIG") or DEFAULT_CONFIG_PATH)
    fields = {f.name: f for f in dataclasses.fields(Settings) if f.name != "config_path"}
    values: dict = {}
    if path.exists():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with path.open(encoding="utf-8") as fh:
                parser.read_file(fh)
        except PermissionError:  # configparser.read() would skip it without a word
            raise ConfigError(f"this user may not read {path} (it holds secrets): "
                              "run it as root.") from None
        if parser.has_section("khhf"):
            for key, raw in parser.items("khhf"):
                if key not in fields:
                    raise ConfigError(f"{path}: unknown setting {key!r}; "
                                      f"known ones are {', '.join(sorted(fields))}.")
                values[key] = _coerce(fields[key], raw)
    for name, field in fields.items():
        env = environ.get(f"KHHF_{name.upper()}")
        if env is not None:
            values[name] = _coerce(field, env)
    values.update(overrides)
    return Settings(config_path=path, **values)


def write_new(path: str | os.PathLike, **values) -> Settings:
    """Write a config file with freshly generated secrets (mode 0600).

    Keeps the secrets of an existing file so a second `khhf init` does not
    lock running components out.
    """
    path = Path(path)
    current = {}
    if path.exists():
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path, encoding="utf-8")
        if parser.has_section("khhf"):
            current = dict(parser.items("khhf"))
    for key in SECRET_KEYS:
        current.setdefault(key, secrets.token_urlsafe(24))
    current.update({k: str(v) for k, v in values.items() if v is not None})
    parser = configparser.ConfigParser(interpolation=None)
    parser["khhf"] = current
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Generated by `khhf init`: holds secrets, keep it mode 0600.\n")
        parser.write(fh)
    return load(path, environ={})
