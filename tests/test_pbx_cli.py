"""`khhf pbx`: bad input gets one clear sentence; two instances coexist."""

import socket
import subprocess
import sys

import pytest

from khhf import config
from simkit.harness import PbxHarness, free_port


def run_khhf(conf_path, *args):
    proc = subprocess.run([sys.executable, "-m", "khhfcli.main", "--config", str(conf_path), *args],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert lines[0].startswith("khhf: ") and lines[0].endswith("."), lines[0]
    return lines[0]


def test_missing_asterisk_root(tmp_path):
    conf = tmp_path / "khhf.conf"
    config.write_new(conf, home=tmp_path, asterisk_root=tmp_path / "no-such-root",
                     sip_port=free_port(), ami_port=free_port(kind=socket.SOCK_STREAM))
    rc, _, err = run_khhf(conf, "pbx", "up")
    assert rc == 1
    line = one_sentence(err)
    assert "no-such-root" in line and "is missing" in line and "khhf pbx build" in line


def test_sip_port_in_use(tmp_path):
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        conf = tmp_path / "khhf.conf"
        config.write_new(conf, home=tmp_path, sip_port=port,
                         ami_port=free_port(kind=socket.SOCK_STREAM))
        rc, _, err = run_khhf(conf, "pbx", "up")
    finally:
        busy.close()
    assert rc == 1
    line = one_sentence(err)
    assert f"SIP port 127.0.0.1:{port}/udp" in line
    assert "already in use" in line and "KHHF_SIP_PORT" in line


def test_wrong_ami_secret(pbx_harness, tmp_path):
    s = pbx_harness.settings
    conf = tmp_path / "khhf.conf"
    conf.write_text(s.config_path.read_text())
    config.write_new(conf, ami_secret="not-the-secret")
    rc, _, err = run_khhf(conf, "pbx", "status")
    assert rc == 1
    line = one_sentence(err)
    assert f"{s.ami_host}:{s.ami_port}" in line and "refused user 'khhf'" in line
    assert "secret does not match" in line
    # the right secret works
    rc, out, err = run_khhf(s.config_path, "pbx", "status")
    assert rc == 0, err
    assert "Asterisk 22" in out and "running" in out


def test_two_instances_run_at_once(pbx_harness, tmp_path):
    with PbxHarness(tmp_path, name="second", desk_extensions=["8009"]) as second:
        assert second.settings.sip_port != pbx_harness.settings.sip_port
        for h in (pbx_harness, second):
            rc, out, err = run_khhf(h.settings.config_path, "pbx", "status")
            assert rc == 0 and "running" in out, err
        # each answers SIP on its own port: a desk phone registers with each
        second.register_desk_phone("8009")
        pbx_harness.register_desk_phone("8003")
    # stopping the second leaves the first running
    rc, out, err = run_khhf(pbx_harness.settings.config_path, "pbx", "status")
    assert rc == 0, err


def test_reload_adds_a_new_desk_phone(tmp_path):
    """A manager added after start-up: `khhf pbx reload` lets the phone register."""
    from sqlalchemy import select

    from khhf import db
    from khhf.models import Manager
    from simkit import factories
    with PbxHarness(tmp_path, name=f"reload{__import__('os').getpid()}",
                    desk_extensions=[]) as h:
        engine = db.make_engine(h.settings.database_url)
        db.create_schema(engine)
        with db.unit_of_work(db.session_factory(engine)) as s:
            factories.manager(s, factories.county(s, "c", "县"), "m", employee_no="E1",
                              desk="8004", display_name="经理")
        with pytest.raises(RuntimeError, match="failed to register"):
            h.register_desk_phone("8004")
        rc, out, err = run_khhf(h.settings.config_path, "pbx", "reload")
        assert rc == 0 and "8004" in out, err
        h.register_desk_phone("8004")
        with db.session_factory(engine)() as s:
            assert s.scalar(select(Manager.desk_extension)) == "8004"
        engine.dispose()


def test_sync_adds_a_new_managers_desk_phone_without_a_restart(tmp_path):
    """The PBX's owner runs `khhf pbx sync --every` (the khhf-phones unit, the
    demo): a manager added after start-up gets a phone that registers, with
    no reload by hand; SIGTERM ends it with 0 (systemd: not a failure)."""
    import signal
    import threading

    from khhf import db
    from simkit import factories
    with PbxHarness(tmp_path, name=f"sync{__import__('os').getpid()}",
                    desk_extensions=[]) as h:
        engine = db.make_engine(h.settings.database_url)
        db.create_schema(engine)
        sync = subprocess.Popen([sys.executable, "-m", "khhfcli.main", "--config",
                                 str(h.settings.config_path), "pbx", "sync", "--every", "0.5"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert "every 0.5 s" in sync.stdout.readline()
            with db.unit_of_work(db.session_factory(engine)) as s:
                factories.manager(s, factories.county(s, "c", "县"), "m", employee_no="E1",
                                  desk="8004", display_name="经理")
            # printed once PJSIP has read the new phone (rendered, then reloaded);
            # a sync that says nothing is killed, which ends the reading
            watchdog = threading.Timer(30, sync.kill)
            watchdog.start()
            while "desk phones added to the PBX: 8004" not in sync.stdout.readline():
                assert sync.poll() is None, "khhf pbx sync never added 8004"
            watchdog.cancel()
            assert h.pbx.rendered_phones() == {"8004"}
            h.register_desk_phone("8004")
        finally:
            sync.send_signal(signal.SIGTERM)
            out = sync.communicate(timeout=30)[0]
            engine.dispose()
    assert sync.returncode == 0, out


def test_sync_refuses_a_bad_interval(tmp_path):
    conf = tmp_path / "khhf.conf"
    config.write_new(conf, home=tmp_path)
    rc, _, err = run_khhf(conf, "pbx", "sync", "--every", "0")
    assert rc == 1
    assert "positive number of seconds" in one_sentence(err)


def test_ring_times_and_desk_pattern_are_rendered_from_one_home(tmp_path):
    """The dialplan restates no ring time and no desk-extension pattern: each
    is rendered from the settings or khhf.numbering."""
    import re

    from khhf import numbering
    from pbxctl.pbx import ASTERISK_CONF_DIR, Layout, Pbx

    shipped = "\n".join(p.read_text() for p in ASTERISK_CONF_DIR.rglob("*.conf"))
    for line in shipped.splitlines():
        if line.lstrip().startswith(";"):
            continue
        assert not re.search(r"Dial\([^)]*,\s*\d+\s*[,)]", line), f"ring time literal: {line}"
        assert "[2-9]XXX" not in line, f"desk pattern literal: {line}"
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path, customer_ring_seconds=33,
                                hotline_mobile_ring_seconds=27, manager_ring_seconds=21)
    pbx = Pbx(settings, [])
    pbx.render(Layout(None, pbx.run_dir, str(pbx.run_dir), "asterisk"))
    etc = pbx.run_dir / "etc"
    globals_ = (etc / "extensions.conf").read_text()
    assert "KHHF_CUSTOMER_RING = 33" in globals_ and "KHHF_MOBILE_RING = 27" in globals_
    assert "KHHF_MANAGER_RING = 21" in globals_
    desk = (etc / "extensions.d" / "20-desk.conf").read_text()
    assert f"exten => {numbering.DESK_EXTENSION_DIALPLAN}," in desk
