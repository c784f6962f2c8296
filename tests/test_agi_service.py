"""`python -m agi` as systemd runs it: ready once listening, then a
watchdog heartbeat from the event loop; SIGTERM stops it cleanly."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from khhf import config, db
from simkit.harness import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_service_notifies_systemd_and_keeps_the_watchdog_fed(tmp_path):
    config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'khhf.db'}")
    db.create_schema(engine)
    engine.dispose()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    port = free_port(kind=socket.SOCK_STREAM)
    env = dict(os.environ, KHHF_CONFIG=str(tmp_path / "khhf.conf"), KHHF_AGI_PORT=str(port),
               NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="200000")
    proc = subprocess.Popen([sys.executable, "-m", "agi"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert notify.recv(64) == b"READY=1"
        # listening by then
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert [notify.recv(64) for _ in range(3)] == [b"WATCHDOG=1"] * 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=10)[0].decode()
        notify.close()
    assert proc.returncode == 0, out
    assert f"FastAGI service on 127.0.0.1:{port}" in out
