"""`khhf service install` renders the shipped systemd units with this
machine's virtual environment and config, and systemd's own checker accepts
them. (This container does not run systemd, so the units are verified with
`systemd-analyze verify`, not started; enabling is refused with a clear
message where systemd is not running.)"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from khhf import config
from khhfcli import service

KHHF = [sys.executable, "-m", "khhfcli.main"]
VENV = Path(sys.prefix)


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
        assert f" --config {conf}" in text, name
        assert "Restart=on-failure\n" in text, name
    python = VENV.resolve() / "bin" / "python"
    for unit, module in (("agi", "agi"), ("bridge", "ami_bridge"), ("web", "webui")):
        text = rendered[f"khhf-{unit}.service"]
        assert f"ExecStart={python} -m {module} --config {conf}\n" in text
        assert "RestartPreventExitStatus=2\n" in text   # khhf.daemon: a config error
    pbx = rendered["khhf-pbx.service"]
    assert "Type=forking\n" in pbx
    assert f"ExecStart={VENV.resolve()}/bin/khhf --config {conf} pbx up\n" in pbx
    assert f"PIDFile={(tmp_path / 'state').resolve()}/pbx/site1/asterisk.pid\n" in pbx
    agi = rendered["khhf-agi.service"]
    assert "Type=notify\n" in agi and re.search(r"^WatchdogSec=\d+$", agi, re.M)
    for name in ("khhf-agi.service", "khhf-bridge.service", "khhf-web.service"):
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
    for name in ("khhf-agi.service", "khhf-web.service"):
        text = units[name]
        assert "ProtectSystem=strict\n" in text and "PrivateTmp=yes\n" in text, name
        assert re.search(r"^ReadWritePaths=-/var/lib/khhf( |$)", text, re.M), name
    # the PBX's bind mount must stay visible to `khhf pbx reload` and the bridge
    assert not re.search(r"^(ProtectSystem|PrivateTmp|ProtectHome)=", units["khhf-pbx.service"], re.M)


def test_clear_errors(tmp_path):
    proc = _install(tmp_path, "--no-enable", "--dest", str(tmp_path / "units"))
    assert proc.returncode == 1
    assert "does not exist: run `khhf init` first" in proc.stderr
    config.write_new(tmp_path / "khhf.conf", home=tmp_path / "state")
    proc = _install(tmp_path, "--no-enable", "--venv", str(tmp_path), "--dest", str(tmp_path))
    assert proc.returncode == 1 and "is not KHHF's virtual environment" in proc.stderr
    # as an ordinary user (nobody), enabling is refused before anything is written
    nobody = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *KHHF,
         "service", "install", "--dest", "/nonexistent"],
        capture_output=True, text=True, cwd="/", env=os.environ)
    assert nobody.returncode == 1 and "needs root" in nobody.stderr, nobody.stderr


def test_enabling_without_systemd_is_refused(tmp_path):
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here: enabling would change this machine's services")
    config.write_new(tmp_path / "khhf.conf", home=tmp_path / "state")
    proc = _install(tmp_path, "--dest", str(tmp_path / "units"))
    assert proc.returncode == 1 and "not running systemd" in proc.stderr, proc.stderr
    assert not (tmp_path / "units").exists()
