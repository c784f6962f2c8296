"""`khhf service install` renders the shipped systemd units with this
machine's virtual environment and config, and systemd's own checker accepts
them. (This container does not run systemd, so the units are verified with
`systemd-analyze verify`, not started; enabling is refused with a clear
message where systemd is not running.)"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from khhf import config
from khhfcli import service

KHHF = [sys.executable, "-m", "khhfcli.main"]
VENV = Path(sys.prefix)
REPO = Path(__file__).resolve().parent.parent
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# the packages the project ships (setup.cfg's list): a new one is copied too
PACKAGES = tuple(line.strip() for line in (REPO / "setup.cfg").read_text().split(
    "[options.packages.find]", 1)[1].split("\n\n", 1)[0].splitlines()
    if line.strip() and "=" not in line and "*" not in line and not line.startswith("["))


@pytest.fixture(scope="module")
def readable_code():
    """This checkout's packages where every user may read them, for commands
    run as `nobody`: a clone under /root is mode 0700 (and so is the
    editable install scripts/install makes of it); PYTHONPATH comes first."""
    top = Path(tempfile.mkdtemp(prefix="khhf-readable-"))
    try:
        for name in PACKAGES:
            shutil.copytree(REPO / name, top / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        for path in (top, *top.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield top
    finally:
        shutil.rmtree(top)


def _install(tmp_path, *args, env=None, **kwargs):
    return subprocess.run(KHHF + ["--config", str(tmp_path / "khhf.conf"), "service", "install",
                                  *args], capture_output=True, text=True,
                          env=env or os.environ, **kwargs)


@pytest.fixture
def rendered(tmp_path):
    config.write_new(tmp_path / "khhf.conf", home=tmp_path / "state", pbx_name="site1")
    proc = _install(tmp_path, "--no-enable", "--dest", str(tmp_path / "units"))
    assert proc.returncode == 0, proc.stderr
    return {p.name: p.read_text() for p in (tmp_path / "units").iterdir()}


def test_units_carry_the_real_venv_config_and_ordering(rendered, tmp_path):
    assert sorted(rendered) == sorted(service.UNITS)
    conf = (tmp_path / "khhf.conf").resolve()
    for name, text in rendered.items():
        assert "{{" not in text, name
        if name == "khhf-health.timer":
            continue
        assert f" --config {conf}" in text, name
        if name != "khhf-health.service":   # a oneshot check, run again by its timer
            assert "Restart=on-failure\n" in text, name
    # the health check: `khhf status --quiet` every minute; red fails the unit
    assert f"ExecStart={VENV.resolve()}/bin/khhf --config {conf} status --quiet\n" \
        in rendered["khhf-health.service"]
    assert "Type=oneshot\n" in rendered["khhf-health.service"]
    assert "OnUnitActiveSec=1min\n" in rendered["khhf-health.timer"]
    assert "khhf-health.service" not in service.ENABLED   # started by its timer
    python = VENV.resolve() / "bin" / "python"
    for unit, module in (("agi", "agi"), ("bridge", "ami_bridge"), ("web", "webui"),
                         ("smsgw", "smsgw"), ("jobs", "jobs")):
        text = rendered[f"khhf-{unit}.service"]
        assert f"ExecStart={python} -m {module} --config {conf}\n" in text
        assert "RestartPreventExitStatus=2\n" in text   # khhf.daemon: a config error
    pbx = rendered["khhf-pbx.service"]
    assert "Type=forking\n" in pbx
    assert f"ExecStart={VENV.resolve()}/bin/khhf --config {conf} pbx up\n" in pbx
    assert f"PIDFile={(tmp_path / 'state').resolve()}/pbx/site1/asterisk.pid\n" in pbx
    # new desk phones: PBX control run by the PBX's owner, not a daemon's side job
    assert f"ExecStart={VENV.resolve()}/bin/khhf --config {conf} pbx sync --every 10\n" \
        in rendered["khhf-phones.service"]
    agi = rendered["khhf-agi.service"]
    assert "Type=notify\n" in agi and re.search(r"^WatchdogSec=\d+$", agi, re.M)
    for name in ("khhf-phones.service", "khhf-agi.service", "khhf-bridge.service",
                 "khhf-web.service"):
        assert "After=khhf-pbx.service\n" in rendered[name], name


def test_systemd_accepts_the_units(rendered, tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/install installs Debian's systemd"
    units = sorted(str(p) for p in (tmp_path / "units").iterdir())
    proc = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)
    # verify reports unknown keys and bad values as warnings with exit code 0
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), \
        proc.stdout + proc.stderr


def test_production_paths_get_the_hardening():
    settings = config.Settings(home=Path("/var/lib/khhf"),
                               config_path=Path("/etc/khhf/khhf.conf"))
    units = service.render(Path("/opt/khhf/venv"), settings)
    for name in ("khhf-agi.service", "khhf-bridge.service", "khhf-web.service",
                 "khhf-smsgw.service", "khhf-jobs.service"):
        text = units[name]
        assert "ProtectSystem=strict\n" in text and "PrivateTmp=yes\n" in text, name
        assert re.search(r"^ReadWritePaths=-/var/lib/khhf( |$)", text, re.M), name
    # the PBX's bind mount must stay visible to `khhf pbx reload` and `khhf pbx sync`
    assert not re.search(r"^(ProtectSystem|PrivateTmp|ProtectHome)=", units["khhf-pbx.service"], re.M)


def test_clear_errors(tmp_path, readable_code):
    proc = _install(tmp_path, "--no-enable", "--dest", str(tmp_path / "units"))
    assert proc.returncode == 1
    assert "does not exist: run `khhf init` first" in proc.stderr
    config.write_new(tmp_path / "khhf.conf", home=tmp_path / "state")
    proc = _install(tmp_path, "--no-enable", "--venv", str(tmp_path), "--dest", str(tmp_path))
    assert proc.returncode == 1 and "is not KHHF's virtual environment" in proc.stderr
    # as an ordinary user (nobody), enabling is refused before anything is written
    nobody = subprocess.run(
        [*NOBODY, *KHHF, "service", "install", "--dest", "/nonexistent"],
        capture_output=True, text=True, cwd="/",
        env={**os.environ, "PYTHONPATH": str(readable_code)})
    assert nobody.returncode == 1 and "needs root" in nobody.stderr, nobody.stderr


def test_enabling_without_systemd_is_refused(tmp_path):
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here: enabling would change this machine's services")
    config.write_new(tmp_path / "khhf.conf", home=tmp_path / "state")
    proc = _install(tmp_path, "--dest", str(tmp_path / "units"))
    assert proc.returncode == 1 and "not running systemd" in proc.stderr, proc.stderr
    assert not (tmp_path / "units").exists()


def _exec_lines(text: str, key: str) -> list[str]:
    return [shlex.split(line.split("=", 1)[1]) for line in text.splitlines()
            if line.startswith(f"{key}=")]


def _listening(port: int, proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.1)


@pytest.mark.pbx   # the PBX unit's ExecStart starts Asterisk
def test_the_units_commands_run_the_system_as_systemd_would(tmp_path):
    """Without systemd here, run each unit's own command lines the way
    systemd would: the PBX's ExecStart forks Asterisk and leaves its pid
    file, the AGI service tells NOTIFY_SOCKET it is ready, the three daemons
    listen and exit 0 on SIGTERM (not a failure to restart), ExecStopPost
    stops the PBX."""
    from simkit.sipp import free_port
    rtp = free_port(span=201)
    ports = {key: free_port(kind=socket.SOCK_STREAM) for key in
             ("ami_port", "agi_port", "bridge_port", "web_port")}
    conf = tmp_path / "khhf.conf"
    config.write_new(conf, home=tmp_path / "state", pbx_name=f"unit{os.getpid()}",
                     sip_port=free_port(), rtp_start=rtp + rtp % 2, rtp_end=rtp + 200,
                     trunk_port=free_port("127.0.0.2"), **ports)
    subprocess.run(KHHF + ["--config", str(conf), "init"], check=True, capture_output=True)
    proc = _install(tmp_path, "--no-enable", "--dest", str(tmp_path / "units"))
    assert proc.returncode == 0, proc.stderr
    units = {p.stem: p.read_text() for p in (tmp_path / "units").iterdir()}
    # systemd's environment: no KHHF_* variables, a plain PATH. PYTHONPATH only
    # so that the venv runs this checkout's code (a test-environment detail)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8", **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    pid_file = Path(re.search(r"^PIDFile=(.+)$", units["khhf-pbx"], re.M).group(1))
    daemons = {}
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    try:
        start, = _exec_lines(units["khhf-pbx"], "ExecStart")
        up = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr          # the forking parent returns...
        asterisk = int(pid_file.read_text())          # ...leaving the daemon and its pid file
        os.kill(asterisk, 0)
        for unit, port in (("khhf-agi", "agi_port"), ("khhf-bridge", "bridge_port"),
                           ("khhf-web", "web_port")):
            command, = _exec_lines(units[unit], "ExecStart")
            extra = {"NOTIFY_SOCKET": str(tmp_path / "notify")} if unit == "khhf-agi" else {}
            daemons[unit] = subprocess.Popen(command, env={**env, **extra},
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if unit == "khhf-agi":
                assert notify.recv(64) == b"READY=1"
            _listening(ports[port], daemons[unit])
        # the SMS gateway listens on nothing: its first line says it runs embedded
        command, = _exec_lines(units["khhf-smsgw"], "ExecStart")
        daemons["khhf-smsgw"] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT)
        first = daemons["khhf-smsgw"].stdout.readline().decode()
        assert "no smsc_host set" in first, first
        command, = _exec_lines(units["khhf-phones"], "ExecStart")
        daemons["khhf-phones"] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT)
        first = daemons["khhf-phones"].stdout.readline().decode()
        assert "adding new managers' desk phones every 10 s" in first, first
    finally:
        for daemon in daemons.values():
            daemon.send_signal(signal.SIGTERM)
        outputs = {unit: daemon.communicate(timeout=20)[0].decode()[-2000:]
                   for unit, daemon in daemons.items()}
        codes = {unit: daemon.returncode for unit, daemon in daemons.items()}
        notify.close()
        stop, = _exec_lines(units["khhf-pbx"], "ExecStopPost")
        down = subprocess.run(stop, env=env, capture_output=True, text=True, timeout=60)
    assert codes == {"khhf-agi": 0, "khhf-bridge": 0, "khhf-web": 0, "khhf-smsgw": 0,
                     "khhf-phones": 0}, outputs
    assert down.returncode == 0, down.stderr
    assert not pid_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(asterisk, 0)
