"""The PBX nodes' registry (khhf.services.nodes) on a real PostgreSQL: the
beat, the choice of a live node by load, a lost node's calls closed once
however many sweep at a time, and completed when the node comes back; a
retired node forgotten (`khhf edge forget`). The
same with real Asterisk nodes behind the edge: tests/test_pbx_edge.py."""

import dataclasses
import datetime as dt
import threading

import pytest
from sqlalchemy import select

from ami_bridge.bridge import Bridge
from ami_bridge.commands import CommandServer
from khhf import bridge_client, config, db, health
from khhf.calls import store
from khhf.models import AuditLog, Call, PbxNode, User, utcnow
from khhf.services import hotline, nodes
from khhf.services.dialing import move_to_node, request_call
from khhfcli import main as cli
from simkit.bridge_env import UNIFIED, BridgeEnv, NoPbx
from simkit.harness import free_port

T0 = dt.datetime(2026, 12, 7, 6, 0, 0)
SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def env(tmp_path, pg_database):
    url = pg_database("nodes").url.render_as_string(hide_password=False)
    env = BridgeEnv(NoPbx(tmp_path, edge_host="127.0.0.1"), tmp_path, database_url=url)
    yield env
    env.engine.dispose()


def node(env, name: str, **fields):
    return dataclasses.replace(env.settings, pbx_name=name, **fields)


def beat(env, settings, live_calls=0, accepting=True, at=T0):
    with db.unit_of_work(env.sessions) as s:
        nodes.beat(s, settings, live_calls, accepting, at)


def dial(env, settings, ext, phone, at=T0) -> int:
    """Click-to-dial by the manager at `ext`, on the node of `settings`."""
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == f"m{ext}"))
        return request_call(s, settings, user, env.task_for(ext, phone), now=at).id


def row(env, call_id) -> Call:
    with env.sessions() as s:
        call = s.get(Call, call_id)
        s.expunge(call)
        return call


def test_one_node_without_an_edge_dials_as_before(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    assert not nodes.in_cluster(settings)
    assert nodes.dial_targets(None, settings) == [settings]  # no database read at all
    assert nodes.watch_targets(None, settings) == [settings]
    assert nodes.node_target(None, settings, "main") is settings


def test_the_live_nodes_least_loaded_first_never_a_silent_one(env):
    a, b, c, d = (node(env, n, bridge_port=4580 + i) for i, n in enumerate("abcd"))
    beat(env, a, live_calls=3)
    beat(env, b, live_calls=1)
    beat(env, c, live_calls=0, at=T0 - nodes.LOST_AFTER - SECOND)  # silent
    beat(env, d, live_calls=0, accepting=False)                    # restarting gracefully
    now = T0 + SECOND
    with env.sessions() as s:
        assert [t.pbx_name for t in nodes.dial_targets(s, env.settings, now)] == ["b", "a"]
    # two calls requested on b since its beat: b's load is 3, a tie with a
    dial(env, b, "8001", "13812345601", at=T0 + SECOND)
    dial(env, b, "8002", "13812345602", at=T0 + SECOND)
    with env.sessions() as s:
        ranked = [(n.name, load) for n, load in nodes.live_nodes(s, now)]
        targets = nodes.dial_targets(s, env.settings, now)
    assert ranked == [("a", 3), ("b", 3)]
    assert (targets[0].bridge_port, targets[0].pbx_name) == (4580, "a")
    # the live view watches every node that beats, also one shutting down
    # gracefully (its calls go on); what only a node can do goes to its bridge
    with env.sessions() as s:
        assert [t.pbx_name for t in nodes.watch_targets(s, env.settings, now)] == ["a", "b", "d"]
        assert nodes.node_target(s, env.settings, "d", now).bridge_port == 4583
        assert nodes.node_target(s, env.settings, "c", now) is None      # silent
        assert nodes.node_target(s, env.settings, "nowhere", now) is None


ANSWERED = [("Newchannel", "PJSIP/8001-00000001", {}),
            ("Newstate", "PJSIP/8001-00000001", {"ChannelStateDesc": "Up"}),
            ("Newchannel", "PJSIP/carrier-00000002", {}),
            ("Newstate", "PJSIP/carrier-00000002", {"ChannelStateDesc": "Up"})]
HANGUPS = [("Hangup", "PJSIP/carrier-00000002", {"Cause": "16"}),
           ("Hangup", "PJSIP/8001-00000001", {"Cause": "16"})]


def ami(env, call_id, events_, start=1):
    """Store AMI events of the call, a second apart from `start` s after
    its request, and recompute it (as a bridge does)."""
    call = row(env, call_id)
    t = call.requested_at.replace(tzinfo=dt.timezone.utc).timestamp()
    raws = [store.raw_from_ami({"Event": name, "Channel": channel, "Linkedid": call.linkedid,
                                "Uniqueid": f"{call.linkedid}-{channel[-1]}",
                                "Timestamp": f"{t + start + i:.6f}", **extra})
            for i, (name, channel, extra) in enumerate(events_)]
    with db.unit_of_work(env.sessions) as s:
        for cid in store.store_events(s, raws):
            store.recompute(s, cid)


def test_a_lost_nodes_calls_are_closed_once_then_completed_when_it_returns(env):
    a, b, c = node(env, "a"), node(env, "b"), node(env, "c")
    for settings in (a, b, c):
        beat(env, settings)
    talking = dial(env, a, "8001", "13812345601")
    ami(env, talking, ANSWERED)  # the customer answered at T0 + 4 s
    requested = dial(env, a, "8002", "13812345602")
    with db.unit_of_work(env.sessions) as s:
        inbound = hotline.start_call(s, caller="13812345603", unified_number=UNIFIED,
                                     uniqueid="in-1", now=T0, settings=a).call_id
    elsewhere = dial(env, b, "8003", "13812345604")
    beat(env, a, at=T0 + 5 * SECOND)

    # a stops beating; b and c go on, and both sweep at the same moment
    later = T0 + 5 * SECOND + nodes.LOST_AFTER + 2 * SECOND
    beat(env, b, at=later)
    beat(env, c, at=later)
    start, claims = threading.Barrier(2), {}

    def sweep(name):
        start.wait()
        with db.unit_of_work(env.sessions) as s:
            claims[name] = nodes.sweep_lost(s, name, later)
    threads = [threading.Thread(target=sweep, args=(n,)) for n in ("b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claims.values(), key=len) == [{}, {"a": 3}], claims
    sweeper = next(name for name, claimed in claims.items() if claimed)

    closed = row(env, talking)
    # at a's last beat
    assert (closed.state, closed.outcome, closed.talk_seconds) == ("ended", "lost", 1)
    # it may have been placed after a's last word: lost, not "not placed"
    assert (row(env, requested).state, row(env, requested).outcome) == ("failed", "lost")
    assert (row(env, inbound).state, row(env, inbound).outcome) == ("ended", "lost")
    assert row(env, elsewhere).state == "requested", "a live node's calls are its own"
    with env.sessions() as s:
        lost = s.get(PbxNode, "a")
        assert (lost.lost_at, lost.lost_by) == (later, sweeper)
        assert nodes.dial_targets(s, env.settings, later)[0].pbx_name != "a"
        assert "lost" in nodes.describe(s, later)[0]
        # once: a later sweep finds nothing to claim
        assert nodes.sweep_lost(s, "b", later + 5 * SECOND) == {}
    check = health.check_nodes(env.engine)  # `khhf status`, /healthz: red, and what to do
    assert not check.ok and check.todo.startswith("start a again"), check

    # a comes back: it beats again, and its record of the call (the AMI events
    # it held, its CEL) has the real end: the row is completed, still one row
    beat(env, a, at=later + 20 * SECOND)
    ami(env, talking, HANGUPS, start=40)
    done = row(env, talking)
    assert (done.state, done.outcome, done.talk_seconds) == ("ended", "answered", 36)
    with env.sessions() as s:
        assert s.get(PbxNode, "a").lost_at is None
        assert s.scalar(select(Call.id).where(Call.linkedid == done.linkedid)
                        .order_by(Call.id.desc())) == talking


def test_a_call_refused_unsent_moves_to_the_next_node_else_is_refused(env):
    """dial_across on real sockets: a node whose bridge does not listen, and
    one whose bridge is not logged in to its Asterisk (nothing is sent);
    the row moves from one to the next, and the last refusal is raised."""
    import asyncio

    gone = node(env, "gone", bridge_port=free_port(kind=1))
    idle = node(env, "idle", bridge_port=free_port(kind=1))
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(CommandServer(Bridge(idle, env.engine,
                                                          env.state_dir)).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        call_id = dial(env, gone, "8001", "13812345601")
        moves = []

        def move(target):
            moves.append(target.pbx_name)
            with db.unit_of_work(env.sessions) as s:
                return move_to_node(s, call_id, target.pbx_name)
        with pytest.raises(bridge_client.NothingSent, match="not connected"):
            bridge_client.dial_across([gone, idle], call_id, move)
        assert moves == ["idle"] and row(env, call_id).pbx_node == "idle"
        # a call no longer requested is not moved, nor dialed anywhere
        ami(env, call_id, ANSWERED[:1])
        with pytest.raises(bridge_client.BridgeUnavailable, match="placed by no PBX node"):
            bridge_client.dial_across([gone, idle], call_id, move)
        assert moves == ["idle", "idle"] and row(env, call_id).pbx_node == "idle"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def test_a_bridge_sweeps_only_once_it_has_beaten_for_the_bound(env):
    """Just started, or back from a database outage that cut every node
    off, a bridge gives the others LOST_AFTER to beat before judging them."""
    beat(env, node(env, "b"), at=T0 - nodes.LOST_AFTER - SECOND)  # silent since
    bridge = Bridge(node(env, "a"), env.engine, env.state_dir)
    assert bridge.beat_node(set(), T0) == {}
    assert bridge.beat_node({"khhf-1-ab"}, T0 + nodes.LOST_AFTER - SECOND) == {}
    assert bridge.beat_node(set(), T0 + nodes.LOST_AFTER) == {"b": 0}
    with env.sessions() as s:
        assert (s.get(PbxNode, "a").live_calls, s.get(PbxNode, "b").lost_by) == (0, "a")


def test_a_recording_is_judged_by_the_node_that_recorded_it(env):
    """The file is on its node's disk: another node's bridge would call it missing."""
    a = node(env, "a")
    call_id = dial(env, a, "8001", "13812345601")
    ami(env, call_id, ANSWERED + HANGUPS)
    assert row(env, call_id).recording_path
    assert Bridge(node(env, "b"), env.engine, env.state_dir).fill_recordings() == set()
    assert row(env, call_id).recording_status is None
    assert Bridge(a, env.engine, env.state_dir).fill_recordings() == {call_id}
    assert row(env, call_id).recording_status == "missing"  # no file in this test


def test_a_retired_node_is_forgotten_once_silent_and_health_turns_green(env, tmp_path, capsys):
    a, b, c = node(env, "a"), node(env, "b"), node(env, "c")
    beat(env, a)
    beat(env, c)
    beat(env, b, at=utcnow())  # b runs
    lost_call = dial(env, a, "8001", "13812345601")
    silent_call = dial(env, c, "8002", "13812345602")
    with db.unit_of_work(env.sessions) as s:
        assert nodes.sweep_lost(s, "b", T0 + nodes.LOST_AFTER + SECOND) == {"a": 1, "c": 1}
    # c came back once and stopped again: silent, not lost, its new call open
    beat(env, c, at=T0 + 60 * SECOND)
    later_call = dial(env, c, "8003", "13812345603", at=T0 + 61 * SECOND)
    assert not health.check_nodes(env.engine).ok  # a is lost: red
    conf = tmp_path / "cli.conf"
    config.write_new(conf, home=tmp_path, database_url=env.settings.database_url,
                     edge_host="127.0.0.1")

    def forget(*name):
        code = cli.main(["--config", str(conf), "edge", "forget", *name])
        return code, capsys.readouterr().err

    code, err = forget("b")
    assert code == 1 and "'b' beat" in err and "it is still running" in err, err
    code, err = forget("z")
    assert code == 1 and "no PBX node is named 'z' (known: a, b, c)" in err, err
    assert forget()[0] == 2
    assert forget("a") == (0, "")
    assert forget("c") == (0, "")
    with env.sessions() as s:
        assert s.scalars(select(PbxNode.name)).all() == ["b"]
        entries = s.scalars(select(AuditLog).where(AuditLog.object_type == "pbx_node")
                            .order_by(AuditLog.id)).all()
        assert [(e.action, e.object_id, e.ip) for e in entries] == [
            ("delete", "a", "cli"), ("delete", "c", "cli")]
        assert ['"calls_closed": 0' in entries[0].detail,
                '"calls_closed": 1' in entries[1].detail] == [True, True]
    assert health.check_nodes(env.engine).ok
    # the calls keep their rows and their node's name; c's later call closed as lost
    assert [(row(env, i).pbx_node, row(env, i).outcome) for i in
            (lost_call, silent_call, later_call)] == [("a", "lost"), ("c", "lost"),
                                                      ("c", "lost")]
