"""The SIP edge's configuration (Kamailio, pbxctl.edge) and the nodes'
behind it, rendered from the settings; the cluster refuses SQLite. The edge
really running in front of two nodes: tests/test_pbx_edge.py."""

import subprocess
import sys

import pytest

from khhf import cluster, config, log_files
from khhf.config import ConfigError
from khhfcli import service
from khhfcli.status import check_edge
from pbxctl import edge, pbx

PG_URL = "postgresql://khhf:pw@127.0.0.1:5433/khhf"


def run_khhf(conf_path, *args):
    proc = subprocess.run([sys.executable, "-m", "khhfcli.main", "--config", str(conf_path), *args],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert lines[0].startswith("khhf: ") and lines[0].endswith("."), lines[0]
    return lines[0]


def edge_settings(tmp_path, **values):
    return config.write_new(tmp_path / "khhf.conf", home=tmp_path, **{
        "database_url": PG_URL, "edge_host": "127.0.0.1", "edge_port": 15060,
        "edge_nodes": "127.0.0.1:15080, 127.0.0.1:15090", "trunk_host": "127.0.0.2",
        "trunk_port": 15070, **values})


def test_the_cluster_refuses_sqlite(tmp_path):
    conf = tmp_path / "khhf.conf"
    s = config.write_new(conf, home=tmp_path, edge_host="127.0.0.1",
                         edge_nodes="127.0.0.1:15080")
    rc, _, err = run_khhf(conf, "edge", "up")
    assert rc == 1
    line = one_sentence(err)
    assert "the SIP edge needs PostgreSQL" in line and "database_url is sqlite" in line
    assert not (tmp_path / "edge" / "kamailio.pid").exists()
    # a node behind the edge (`khhf pbx up`), before anything starts
    with pytest.raises(ConfigError, match=r"^PBX node 'main' behind the SIP edge .* needs "
                                          r"PostgreSQL.*\.$"):
        pbx.Pbx(s).up()
    assert not (tmp_path / "pbx" / "main" / "asterisk.pid").exists()


def test_edge_config_is_rendered_from_the_settings_and_kamailio_accepts_it(tmp_path):
    s = edge_settings(tmp_path)
    e = edge.Edge(s, ["8001"])
    e.render()
    cfg = e.config_file.read_text()
    assert "{{" not in cfg
    for socket in ("udp:127.0.0.1:15060", "udp:127.0.0.1:15061", "udp:127.0.0.1:15062"):
        assert f"listen={socket}\n" in cfg
    assert 'modparam("usrloc", "db_url", "postgres://khhf:pw@127.0.0.1:5433/khhf")' in cfg
    assert '$si == "127.0.0.2"' in cfg and '$rp = 15070;' in cfg
    assert e.config_file.stat().st_mode & 0o777 == 0o640   # it holds the database password
    nodes = (tmp_path / "edge" / "dispatcher.list").read_text().splitlines()[1:]
    assert nodes == ["1 sip:127.0.0.1:15080 0 0 socket=udp:127.0.0.1:15061;duid=node1",
                     "1 sip:127.0.0.1:15090 0 0 socket=udp:127.0.0.1:15061;duid=node2"]
    check = subprocess.run(e.command("-c"), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_edge_settings_errors(tmp_path):
    with pytest.raises(ConfigError, match="'nowhere' is not host:port"):
        edge_settings(tmp_path, edge_nodes="127.0.0.1:15080,nowhere").edge_node_list()
    with pytest.raises(ConfigError, match="edge_nodes is empty"):
        edge.Edge(edge_settings(tmp_path, edge_nodes="")).check()
    with pytest.raises(ConfigError, match="options .sslmode. that Kamailio cannot take"):
        cluster.kamailio_db_url(edge_settings(tmp_path, database_url=PG_URL + "?sslmode=require"))
    s = edge_settings(tmp_path, database_url="postgresql+psycopg://u:p@db.example/khhf")
    assert cluster.kamailio_db_url(s) == "postgres://u:p@db.example:5432/khhf"


def test_a_node_behind_the_edge_sends_the_carrier_and_the_phones_through_it(tmp_path):
    s = edge_settings(tmp_path, edge_inner_host="127.0.0.9", pbx_name="n1")
    node = pbx.Pbx(s, ["8001"])
    node.render(pbx.Layout(None, node.run_dir, str(node.run_dir), "asterisk"))
    etc = node.run_dir / "etc" / "pjsip.d"
    trunk = (etc / "10-trunk.conf").read_text()
    # the carrier is the edge's carrier-side socket, known by address and port
    assert "contact = sip:127.0.0.9:15061\n" in trunk and "match = 127.0.0.9:15061\n" in trunk
    assert "127.0.0.2" not in trunk
    phones = (etc / "50-desk-phones.conf").read_text()
    assert "[8001](desk-phone-aor)\ncontact = sip:8001@127.0.0.9:15062\n" in phones
    # its channels' unique ids name it: those of nodes taking calls at the same
    # pace would repeat, and one would take another's call row
    assert "\nsystemname = n1\n" in (node.run_dir / "etc" / "asterisk.conf").read_text()
    # one node alone: the carrier by its IP, phones register with the PBX
    alone = config.write_new(tmp_path / "alone.conf", home=tmp_path / "alone")
    node = pbx.Pbx(alone, ["8001"])
    node.render(pbx.Layout(None, node.run_dir, str(node.run_dir), "asterisk"))
    etc = node.run_dir / "etc" / "pjsip.d"
    assert "match = 127.0.0.2\n" in (etc / "10-trunk.conf").read_text()
    assert "contact" not in (etc / "50-desk-phones.conf").read_text()
    assert "systemname" not in (node.run_dir / "etc" / "asterisk.conf").read_text()


def test_the_edge_unit_is_enabled_only_on_the_edge(tmp_path):
    assert "khhf-edge.service" in service.UNITS
    node = config.write_new(tmp_path / "node.conf", home=tmp_path, edge_host="127.0.0.1")
    assert "khhf-edge.service" not in service.enabled_units(node)
    assert "khhf-edge.service" in service.enabled_units(edge_settings(tmp_path))
    unit = service.render(tmp_path, edge_settings(tmp_path))["khhf-edge.service"]
    assert f"PIDFile={tmp_path.resolve()}/edge/kamailio.pid\n" in unit
    assert " edge up\n" in unit and "Conflicts=kamailio.service\n" in unit


def test_status_says_the_edge_is_down_and_its_log_is_rotated_on_its_machine(tmp_path):
    settings = edge_settings(tmp_path)
    check = check_edge(settings)
    assert (check.name, check.ok, check.detail) == ("edge", False, "not running")
    assert "systemctl start khhf-edge" in check.todo
    # the jobs daemon rotates the edge's log like Asterisk's, on the edge's machine only
    log = tmp_path / "edge" / "kamailio.log"
    log.parent.mkdir()
    log.write_bytes(b"x" * 2048)
    assert log_files.rotate_logs(settings, 1024, 2) == [log]
    assert log.read_bytes() == b"" and (tmp_path / "edge" / "kamailio.log.1.gz").exists()
    log.write_bytes(b"x" * 2048)
    assert log_files.rotate_logs(edge_settings(tmp_path, edge_nodes=""), 1024, 2) == []
