"""A wheel built from the repository is complete: installed into an empty
virtual environment made with Debian's own Python, away from the checkout,
`khhf init` and `khhf demo run` bring the whole system up (the Asterisk
config, schema, SIPp scenarios, templates, static files and catalogs all
come from the wheel), and Ctrl-C stops it."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from simkit.demo_client import RunningDemo, demo_env

REPO = Path(__file__).resolve().parent.parent
# not source: build output, caches, and files generated at run time
IGNORED = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", "*.mo", "out", "50-desk-phones.conf")


def _pip(*args):
    """Run pip; its output only shows if it fails."""
    # without PYTHONPATH: pip would count a checkout on it as khhf already installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([*args, "-q", "--disable-pip-version-check"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"


def test_wheel_in_an_empty_venv_runs_the_demo(tmp_path):
    # build from a copy: an in-tree build would write build/ into the checkout
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=IGNORED)
    _pip(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"),
         str(src))
    wheel, = (tmp_path / "dist").glob("khhf-*.whl")

    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    _pip(venv / "bin/pip", "install", str(wheel))   # dependencies from PyPI

    home = tmp_path / "home"
    home.mkdir()
    env = demo_env(home)
    for leak in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(leak, None)   # nothing from the checkout may be importable
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [venv / "bin/python", "-c",
         "import khhf.migrations, khhf.i18n, pbxctl.pbx, simkit.sipp\n"
         "for p in (khhf.migrations.SCRIPT_DIR / 'versions' / '0001_baseline.sql',"
         " pbxctl.pbx.ASTERISK_CONF_DIR, simkit.sipp.SIPP_DIR,"
         " khhf.i18n.TRANSLATIONS): print(p)"],
        env=env, cwd=elsewhere, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    where = where.stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where

    khhf = str(venv / "bin/khhf")
    subprocess.run([khhf, "init", "--home", str(home)], env=env, cwd=elsewhere, check=True,
                   capture_output=True)
    demo = RunningDemo([khhf, "demo", "run"], home, env, cwd=elsewhere)
    try:
        demo.ready()
        children = demo.children()
        assert demo.passwords.keys() >= {"admin", "manager1"}, demo.printed()
        login = urllib.request.urlopen(f"{demo.url}/login", timeout=10).read().decode()
        assert "登录" in login                # the compiled Chinese catalog
        css = urllib.request.urlopen(f"{demo.url}/static/khhf.css", timeout=10)
        assert css.status == 200
        # the services run on the venv's Python
        assert all(argv[0].startswith(str(venv / "bin/python"))
                   or argv[0] in ("/usr/bin/sipp", "/usr/sbin/asterisk")
                   for argv in children.values()), children
    finally:
        rc = demo.interrupt()
    assert rc == 0, demo.printed()
    time.sleep(0.5)
    left = [pid for pid in children if os.path.exists(f"/proc/{pid}")
            and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not left, left
    status = subprocess.run([khhf, "pbx", "status"], env=env, cwd=elsewhere,
                            capture_output=True, text=True)
    assert status.returncode == 1 and "not running" in status.stderr, status
    # the systemd units are in the wheel too
    units = subprocess.run([khhf, "service", "install", "--no-enable", "--dest",
                            str(tmp_path / "units")], env=env, cwd=elsewhere,
                           capture_output=True, text=True)
    assert units.returncode == 0, units.stderr
    assert f"ExecStart={venv.resolve()}/bin/python -m webui --config" in (
        tmp_path / "units" / "khhf-web.service").read_text()
