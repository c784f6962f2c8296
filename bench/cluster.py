"""The cluster under load, one node lost (issue 22; docs/cluster.md):
Kamailio (the khhf edge) in front of three real Asterisk nodes, each with
its own AMI bridge and FastAGI service (`python -m ami_bridge|agi`, as
systemd starts them), one private PostgreSQL, all on loopback addresses
(edge 127.0.0.1, nodes 127.0.0.11-13, carrier 127.0.0.2).

    python3 -m bench.cluster [--quick] [--calls 1000] [--rate 10] [--hotline 0.7]
                             [--talk 1.0] [--kill-at 0.4] [--return-at 0.7]

- Desk phones: one answering SIPp whose port every desk extension names as
  its contact when it registers with the edge (digest auth, one register
  run per desk); it hangs up 1.5 s after the customer's talk time (so a
  click-to-dial manager leaves the keypad prompt unanswered); the carrier: one SIPp on 127.0.0.2 answering every
  customer leg (hangs up after --talk s), and one SIPp sending the hotline
  calls to the edge (each from its own customer number, who talks 0.5 s).
- Click-to-dial: as the web UI does, the product chooses the node
  (khhf.services.nodes.dial_targets: the live nodes of the registry the
  bridges keep, least loaded first), the dialing service writes the call,
  and the first of those nodes' bridges that takes it originates it
  (bridge_client.dial_across; a refusal before anything was sent moves
  the row to the next node).
- At --kill-at of the run one node's Asterisk is SIGKILLed; the edge's
  dispatcher state is polled every 50 ms to see when it noticed. At
  --return-at the node is started again and must take calls again.
- Cost per call: CPU-seconds (utime + stime from /proc, reaped children
  included) of Kamailio (all its processes), PostgreSQL (the private
  postmaster and all its backends) and each node (Asterisk + bridge +
  FastAGI), from the start of traffic until the kill, divided by the calls
  placed in that window (per node: by the calls it carried), and from them
  the capacity of N nodes on paper.

Prints one table, then its key figures as the last line. Not a test:
nothing asserts; on a shared host the figures are upper bounds (the load
average is printed beside them).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select, text

from khhf import bridge_client, db
from khhf.calls.states import FINAL_STATES, CallOutcome, CallState
from khhf.models import Call, User
from khhf.services import nodes
from khhf.services.dialing import mark_not_placed, move_to_node, request_call
from simkit import factories
from simkit.drills import account_calls
from simkit.drills.stack import Daemon, register_desks
from simkit.harness import EdgeHarness, PbxHarness, free_port
from simkit.pg_cluster import PrivatePostgres
from simkit.sipp import SIPP_DIR, Sipp

UNIFIED = "13900000000"
NODES = 3
KILLED = 1          # the second node is the one lost
HOTLINE_DESKS = [str(8501 + i) for i in range(20)]
CLICK_DESKS = [str(8001 + i) for i in range(20)]
TICK = os.sysconf("SC_CLK_TCK")
# a calling customer talks this long, then hangs up (edge_hotline_call.xml)
CALLER_TALK_S = 0.5
CALLER_PATIENCE_S = 40
# a desk phone hangs up this long after the customer's talk time would end
# (a hotline caller hangs up first; on click-to-dial, the customer does)
DESK_EXTRA_S = 1.5
# seconds of no traffic measured first
IDLE_S = 10


# -- CPU accounting ----------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, CPU-seconds incl. reaped children)} of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[1] ppid; [11] utime, [12] stime, [13] cutime, [14] cstime
        out[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / TICK)
    return out


def tree_cpu(roots, table: dict[int, tuple[int, float]] | None = None) -> float:
    """CPU-seconds of the processes `roots` and all their descendants."""
    table = table if table is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [r for r in roots if r], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo += children.get(pid, [])
    return total


# -- the cluster ---------------------------------------------------------------------
@dataclasses.dataclass
class Node:
    harness: PbxHarness
    daemons: list[Daemon]

    @property
    def settings(self):
        return self.harness.settings

    @property
    def name(self) -> str:
        return self.settings.pbx_name

    @property
    def uri(self) -> str:
        return f"sip:{self.settings.sip_host}:{self.settings.sip_port}"

    def pids(self) -> list[int | None]:
        return [self.harness.pbx.pid(), *(d.pid for d in self.daemons)]

    def kill_pbx(self) -> None:
        """SIGKILL Asterisk, and reap it (so `pbx.up()` starts a new one)."""
        pbx = self.harness.pbx
        os.kill(pbx.pid(), signal.SIGKILL)
        proc = getattr(pbx, "_proc", None)
        if proc is not None:
            proc.wait()


class Cluster:
    def __init__(self, workdir: Path, talk_s: float):
        self.workdir = workdir
        self.talk_s = talk_s
        self.stack = contextlib.ExitStack()
        self.pg = PrivatePostgres()

    def __enter__(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def _start(self) -> None:
        self.stack.callback(self.pg.remove)
        # pg_stat_statements: where the database's time per call goes
        self.pg.start("-c shared_preload_libraries=pg_stat_statements")
        self.pg.create_database()
        self.url = self.pg.url
        self.engine = db.make_engine(self.url)
        self.stack.callback(self.engine.dispose)
        db.create_schema(self.engine)
        with self.engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION pg_stat_statements"))
        self.sessions = db.session_factory(self.engine)
        desks = CLICK_DESKS + HOTLINE_DESKS
        edge_port = free_port(span=3)
        phone_secret = os.urandom(16).hex()
        self.nodes: list[Node] = []
        for i in range(1, NODES + 1):
            host = f"127.0.0.1{i}"
            harness = PbxHarness(
                self.workdir / f"node{i}", name=f"cl{i}x{os.getpid()}", desk_extensions=desks,
                sip_host=host, database_url=self.url,
                edge_host="127.0.0.1", edge_port=edge_port, phone_secret=phone_secret,
                agi_port=free_port(kind=socket.SOCK_STREAM),
                bridge_port=free_port(kind=socket.SOCK_STREAM), calling_window="00:00-24:00",
                manager_ring_seconds=10, reconcile_seconds=2, sync_desk_phones=0)
            self.stack.enter_context(harness)
            logs = harness.workdir / "logs"
            logs.mkdir(exist_ok=True)
            daemons = [Daemon(m, harness.settings, logs) for m in ("ami_bridge", "agi")]
            for daemon in daemons:
                self.stack.callback(daemon.stop)
                daemon.start()
            self.nodes.append(Node(harness, daemons))
        self.edge = EdgeHarness(self.workdir / "edge", [n.harness for n in self.nodes],
                                desk_extensions=desks)
        self.stack.enter_context(self.edge)
        self._wait_nodes_ready()
        self.desk_port = free_port()
        register_desks(self.nodes[0].settings, desks, self.desk_port, self.workdir,
                       remote=self.edge.sip_target)
        # a manager hangs up DESK_EXTRA_S after the customer (not keying a result)
        self.desks = self.edge.party("edge_answer_hangup.xml", local_ip="127.0.0.1",
                                     port=self.desk_port, calls=None, run_limit=None,
                                     duration_ms=int((self.talk_s + DESK_EXTRA_S) * 1000)).start()
        self.carrier = self.edge.party("edge_answer_hangup.xml", local_ip="127.0.0.2",
                                       port=self.edge.settings.trunk_port, calls=None,
                                       run_limit=None, duration_ms=int(self.talk_s * 1000)).start()

    def _wait_nodes_ready(self, timeout: float = 120) -> None:
        from khhf.daemon import run_dir
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while not (run_dir(node.settings) / "agi.json").exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the FastAGI service of {node.name} did not start")
                time.sleep(0.2)
            wait_bridge(node, deadline)
        while set(self.edge.node_states().values()) != {"up"}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every node answers the edge: {self.edge.node_states()}")
            time.sleep(0.2)
        # click-to-dial chooses among the nodes whose bridges beat into the registry
        while True:
            with self.sessions() as s:
                beating = {node.name for node, _ in nodes.live_nodes(s)}
            if beating == {n.name for n in self.nodes}:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every node's bridge beats: only {sorted(beating)}")
            time.sleep(0.2)

    def seed(self, hotline_calls: int, click_calls: int) -> tuple[list[str], list[tuple]]:
        """The county and its managers; (hotline callers, [(desk, user id,
        task id, customer number)] in click order), one customer each."""
        callers, clicks = [], []
        with db.unit_of_work(self.sessions) as s:
            county = factories.county(s, "cluster", "集群县", unified=UNIFIED)
            revisit = factories.task_type(s)
            per_desk = -(-hotline_calls // len(HOTLINE_DESKS))
            for ext in HOTLINE_DESKS:
                m = factories.manager(s, county, f"m{ext}", desk=ext, mobile=f"1380000{ext}",
                                      on_duty=True)
                for i in range(per_desk):
                    factories.customer(s, county, f"137{ext}{i:04d}", m)
            per_desk = -(-click_calls // len(CLICK_DESKS))
            tasks_of = {}
            for ext in CLICK_DESKS:
                m = factories.manager(s, county, f"m{ext}", desk=ext, mobile=f"1380000{ext}",
                                      on_duty=True)
                tasks_of[ext] = []
                for i in range(per_desk):
                    number = f"136{ext}{i:04d}"
                    task = factories.task(s, factories.customer(s, county, number, m), m, revisit)
                    tasks_of[ext].append((ext, m.user_id, task.id, number))
        # caller i belongs to hotline desk i % 20: every desk in turn
        callers = [f"137{HOTLINE_DESKS[i % len(HOTLINE_DESKS)]}{i // len(HOTLINE_DESKS):04d}"
                   for i in range(hotline_calls)]
        for i in range(click_calls):
            clicks.append(tasks_of[CLICK_DESKS[i % len(CLICK_DESKS)]][i // len(CLICK_DESKS)])
        return callers, clicks

    def reset_statements(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_stat_statements_reset()"))

    def statements(self) -> dict[int, tuple[int, float, str]]:
        """{queryid: (calls, total execution ms, query)} of every statement
        since the reset (pg_stat_statements; BEGIN and COMMIT included)."""
        with self.engine.connect() as conn:
            return {r[0]: (int(r[1]), float(r[2]), " ".join(r[3].split()))
                    for r in conn.execute(text(
                        "SELECT queryid, calls, total_exec_time, query FROM pg_stat_statements"))}

    def backends(self) -> dict[int, str]:
        """{pid: who} of the private server's processes now: a client
        backend by its application_name (KHHF's processes name themselves,
        khhf.db.application_name; Kamailio's connections have none), the
        server's own by their type."""
        with self.engine.connect() as conn:
            return {pid: (name or "kamailio (no name)") if kind == "client backend" else
                    f"server: {kind}" for pid, name, kind in conn.execute(text(
                        "SELECT pid, application_name, backend_type FROM pg_stat_activity"))}

    def cpu(self) -> dict[str, float]:
        """CPU-seconds so far: edge, postgres, each node, the SIPp parties."""
        table = _proc_table()
        postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        out = {"edge": tree_cpu([self.edge.edge.pid()], table),
               "postgres": tree_cpu([postmaster], table),
               "postmaster": table[postmaster][1] if postmaster in table else 0.0,
               "sipp": tree_cpu([p.proc.pid for p in self.edge.parties if p.proc], table)}
        for node in self.nodes:
            out[node.name] = tree_cpu(node.pids(), table)
            pbx, bridge, agi = node.pids()
            out[f"{node.name}/asterisk"] = tree_cpu([pbx], table)
            out[f"{node.name}/bridge"] = tree_cpu([bridge], table)
            out[f"{node.name}/agi"] = tree_cpu([agi], table)
        # the server's CPU by whom its processes serve (a backend that ended
        # meanwhile is in the postmaster's reaped children's)
        for pid, who in self.backends().items():
            if pid in table:
                out[f"pg/{who}"] = out.get(f"pg/{who}", 0.0) + table[pid][1]
        return out


def wait_bridge(node: Node, deadline: float) -> None:
    while True:
        try:
            bridge_client.live(node.settings, timeout=5)
            return
        except bridge_client.BridgeUnavailable:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bridge of {node.name} does not answer") from None
            time.sleep(0.2)


# -- traffic -------------------------------------------------------------------------
class EdgeWatch(threading.Thread):
    """Polls the edge's dispatcher: which nodes it sends to, and when that changed."""

    def __init__(self, cluster: Cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.up = {n.uri for n in cluster.nodes}
        self.changes: list[tuple[float, str, str]] = []   # (monotonic, uri, state)
        self.interval = 0.25
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(Exception):
                states = self.cluster.edge.node_states()
                now = time.monotonic()
                up = {uri for uri, state in states.items() if state == "up"}
                for uri in up ^ self.up:
                    self.changes.append((now, uri, "up" if uri in up else "down"))
                self.up = up
            self.stopped.wait(self.interval)

    def first(self, uri: str, state: str, after: float) -> float | None:
        return next((t for t, u, s in self.changes if u == uri and s == state and t > after), None)


@dataclasses.dataclass
class Click:
    at: float                  # monotonic, when the bench asked
    number: str
    node: str | None = None
    call_id: int | None = None
    error: str | None = None
    skipped: int = 0           # live nodes whose bridge refused it unsent first


class Clicker(threading.Thread):
    """Click-to-dial at `rate` per second, on the node the product chooses."""

    def __init__(self, cluster: Cluster, clicks: list[tuple], rate: float, t0: float):
        super().__init__(daemon=True)
        self.cluster, self.todo, self.rate, self.t0 = cluster, clicks, rate, t0
        self.done: list[Click] = []

    def run(self) -> None:
        for i, (_ext, user_id, task_id, number) in enumerate(self.todo):
            delay = self.t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.done.append(self.click(user_id, task_id, number))

    def click(self, user_id: int, task_id: int, number: str) -> Click:
        """As the web UI's click-to-dial does (webui/calls.py): the product
        chooses the node (khhf.services.nodes: the live nodes of the
        registry, least loaded first), the first bridge that takes it
        originates it (bridge_client.dial_across)."""
        click = Click(time.monotonic(), number)
        web = self.cluster.nodes[0].settings   # any node's settings: the registry is shared
        try:
            with self.cluster.sessions() as s:
                targets = nodes.dial_targets(s, web)
            live, targets = bridge_client.live_across(targets, timeout=5)
        except bridge_client.BridgeUnavailable as exc:
            click.error = f"no node takes calls: {exc}"
            return click
        try:
            with db.unit_of_work(self.cluster.sessions) as s:
                user = s.get(User, user_id)
                click.call_id = request_call(s, targets[0], user, task_id, live=live).id

            def move(target) -> bool:
                with db.unit_of_work(self.cluster.sessions) as s:
                    return move_to_node(s, click.call_id, target.pbx_name)
            taken = bridge_client.dial_across(targets, click.call_id, move)
            click.node = taken.pbx_name
            click.skipped = [t.pbx_name for t in targets].index(taken.pbx_name)
        except bridge_client.BridgeUnavailable as exc:
            # as the web UI does: nothing rang, so the manager is not "on a call"
            if click.call_id is not None:
                with db.unit_of_work(self.cluster.sessions) as s:
                    mark_not_placed(s, s.get(Call, click.call_id))
            click.error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a refused click is a figure
            click.error = f"{type(exc).__name__}: {exc}"
        return click


def hotline_party(cluster: Cluster, callers: list[str], rate: float, seconds: float) -> Sipp:
    inf = cluster.workdir / "callers.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in callers))
    scenario = cluster.workdir / "cluster_hotline_call.xml"
    scenario.write_text((SIPP_DIR / "edge_hotline_call.xml").read_text()
                        .replace("[caller]", "[field0]"))
    party = cluster.edge.party(str(scenario), local_ip="127.0.0.2",
                               port=free_port("127.0.0.2"), remote=cluster.edge.sip_target,
                               service=UNIFIED, calls=len(callers), rate=rate,
                               max_concurrent=int(rate * 30) + 10,
                               run_limit=f"{int(seconds) + 300}s")
    # a customer whose call rings on a node that died gives up after 40 s
    # (the edge itself would wait fr_inv_timer, 300 s, for the dead node)
    party.args += ["-inf", str(inf), "-recv_timeout", str(CALLER_PATIENCE_S * 1000)]
    return party.start()


def hotline_outcomes(sipp: Sipp) -> dict[str, dict]:
    """{caller: {"invite": monotonic time of the first INVITE, "final":
    status, "node": host:port of the answering node's Contact}} from the
    carrier's SIPp trace (its wall clock mapped onto the monotonic one)."""
    offset = time.monotonic() - time.time()
    text = sipp.message_file.read_text(errors="replace").replace("\r\n", "\n")
    calls: dict[str, dict] = {}
    caller_of: dict[str, str] = {}
    for stamp, direction, body in re.findall(
            r"^-{20,} (\S+ \S+)\n\S+ message (sent|received)[^\n]*\n\n?(.*?)(?=^-{20,} |\Z)",
            text, re.S | re.M):
        call_id = re.search(r"^Call-ID:\s*(\S+)", body, re.M | re.I).group(1)
        first = body.split("\n", 1)[0]
        if direction == "sent" and first.startswith("INVITE ") and call_id not in caller_of:
            caller = re.search(r"^From:\s*<sip:(\d+)@", body, re.M).group(1)
            caller_of[call_id] = caller
            calls[caller] = {"final": None, "node": None,
                             "invite": dt.datetime.fromisoformat(stamp).timestamp() + offset}
        status = re.match(r"SIP/2.0 (\d{3})", first)
        if direction == "received" and status and call_id in caller_of \
                and re.search(r"^CSeq:\s*\d+ INVITE", body, re.M):
            call = calls[caller_of[call_id]]
            # the node that answers (180, 200) names itself in Contact
            contact = re.search(r"^Contact:\s*<sip:(?:[^@>]*@)?([\d.]+:\d+)", body, re.M)
            if contact:
                call["node"] = contact.group(1)
            if int(status.group(1)) >= 200:
                call["final"] = int(status.group(1))
    return calls


# -- the run -------------------------------------------------------------------------
def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run(args) -> tuple[list[tuple[str, str]], str]:
    n_hot = round(args.calls * args.hotline)
    n_click = args.calls - n_hot
    seconds = args.calls / args.rate
    workdir = Path(tempfile.mkdtemp(prefix="khhf-bench-cluster-"))
    print(f"[cluster] {workdir}: starting PostgreSQL, {NODES} nodes (bridge, FastAGI), "
          f"Kamailio; load average {load()}", file=sys.stderr, flush=True)
    with Cluster(workdir, args.talk) as cl:
        callers, clicks = cl.seed(n_hot, n_click)
        watch = EdgeWatch(cl)
        watch.start()
        killed = cl.nodes[KILLED]
        load_before = load()
        print(f"[cluster] up; {args.calls} calls ({n_hot} hotline, {n_click} click-to-dial) at "
              f"{args.rate:g}/s for {seconds:.0f} s; load average {load_before}",
              file=sys.stderr, flush=True)
        # what the parts spend with no call (probes, reconcilers), for scale
        cl.reset_statements()
        idle0, t_idle = cl.cpu(), time.monotonic()
        time.sleep(IDLE_S)
        idle1 = cl.cpu()
        idle_s = time.monotonic() - t_idle
        idle = {k: (idle1[k] - idle0.get(k, 0.0)) / idle_s for k in idle1}
        idle_statements = cl.statements()
        cl.reset_statements()
        cpu0 = cl.cpu()
        t0 = time.monotonic() + 0.5
        hot = hotline_party(cl, callers, args.rate * args.hotline, seconds) if n_hot else None
        clicker = Clicker(cl, clicks, args.rate * (1 - args.hotline), t0)
        clicker.start()
        # the cost window: traffic with every node up, until the kill
        time.sleep(max(0.0, t0 + args.kill_at * seconds - time.monotonic()))
        cpu1 = cl.cpu()
        t_cpu = time.monotonic() - t0
        statements = cl.statements()
        (workdir / "statements.json").write_text(json.dumps(
            {"idle_s": idle_s, "window_s": t_cpu, "idle": list(idle_statements.values()),
             "window": list(statements.values())}, ensure_ascii=False))
        watch.interval = 0.05
        t_kill = time.monotonic()
        killed.kill_pbx()
        print(f"[cluster] {killed.name} killed at {t_kill - t0:.1f} s", file=sys.stderr,
              flush=True)
        while watch.first(killed.uri, "down", t_kill) is None \
                and time.monotonic() < t_kill + 60:
            time.sleep(0.05)
        noticed = watch.first(killed.uri, "down", t_kill)
        watch.interval = 0.25
        time.sleep(max(0.0, t0 + args.return_at * seconds - time.monotonic()))
        t_back = time.monotonic()
        killed.harness.pbx.up()
        started = time.monotonic()
        while watch.first(killed.uri, "up", t_back) is None and time.monotonic() < t_back + 60:
            time.sleep(0.05)
        back = watch.first(killed.uri, "up", t_back)
        print(f"[cluster] {killed.name} started again in {started - t_back:.1f} s",
              file=sys.stderr, flush=True)
        clicker.join(seconds + 120)
        if hot is not None:
            hot.wait(seconds + 300)
        t_end = time.monotonic()
        # the rows: wait (bounded) for the survivors' calls to close
        deadline = time.monotonic() + 60
        numbers = set(callers) | {c[3] for c in clicks}
        while True:
            with cl.sessions() as s:
                rows = list(s.scalars(select(Call).where(Call.customer_number.in_(numbers))))
                for row in rows:
                    s.expunge(row)
            open_rows = [r for r in rows if r.state not in FINAL_STATES]
            if not [r for r in open_rows if r.pbx_node != killed.name] \
                    or time.monotonic() > deadline:
                break
            time.sleep(1)
        watch.stopped.set()
        load_after = load()
        node_of_addr = {f"{n.settings.sip_host}:{n.settings.sip_port}": n.name for n in cl.nodes}
        hot_calls = hotline_outcomes(hot) if hot is not None else {}
        return report(args, cl, killed, locals())


def statement_profile(window: dict, idle: dict, idle_s: float, window_s: float,
                      calls: int, limit: int = 40) -> list[str]:
    """The statements per call (pg_stat_statements, start to kill) against
    the idle floor (the same statements with no call, scaled to the
    window), the most frequent first: count per call, execution µs per
    call, each also beyond the floor."""
    if not calls:
        return []
    scale = window_s / idle_s if idle_s else 0.0
    rows = []
    for qid, (n, ms, query) in window.items():
        idle_n, idle_ms, _ = idle.get(qid, (0, 0.0, ""))
        rows.append((n / calls, ms * 1000 / calls, (n - idle_n * scale) / calls,
                     (ms - idle_ms * scale) * 1000 / calls, query))
    rows.sort(key=lambda r: -r[0])
    total = [sum(r[i] for r in rows) for i in range(4)]
    idle_count = sum(n for n, _, _ in idle.values())
    out = [f"statements, start to kill: {sum(n for n, _, _ in window.values())} for {calls} "
           f"calls in {window_s:.0f} s; idle {idle_count} in {idle_s:.0f} s "
           f"({idle_count / idle_s if idle_s else 0:.1f}/s)",
           "per call: count, exec µs | beyond the idle floor: count, exec µs | query",
           f"{total[0]:6.2f} {total[1]:7.0f} | {total[2]:6.2f} {total[3]:7.0f} | (all)"]
    out += [f"{a:6.2f} {b:7.0f} | {c:6.2f} {d:7.0f} | {q[:150]}" for a, b, c, d, q in rows[:limit]]
    return out


def pg_cpu_profile(spent: dict[str, float], floor: dict[str, float], calls: int) -> list[str]:
    """PostgreSQL's CPU per call by whom its backends serve, and beyond the floor."""
    if not calls:
        return []
    parts = sorted((k for k in spent if k.startswith("pg/")), key=lambda k: -spent[k])
    out = [f"PostgreSQL CPU per call: {spent['postgres'] * 1000 / calls:.2f} ms, beyond the "
           f"idle floor {(spent['postgres'] - floor['postgres']) * 1000 / calls:.2f} ms "
           f"(postmaster and backends that ended: "
           f"{(spent['postgres'] - sum(spent[k] for k in parts)) * 1000 / calls:.2f} ms)"]
    out += [f"  {k[3:]}: {spent[k] * 1000 / calls:.2f} ms (floor {floor.get(k, 0.0) * 1000 / calls:.2f})"
            for k in parts]
    return out


def report(args, cl: Cluster, killed: Node, v: dict) -> tuple[list[tuple[str, str]], str]:
    t0, t_kill, noticed, t_back, back = v["t0"], v["t_kill"], v["noticed"], v["t_back"], v["back"]
    hot_calls, clicks, rows = v["hot_calls"], v["clicker"].done, v["rows"]
    node_of_addr = v["node_of_addr"]
    cut = noticed if noticed is not None else float("inf")
    rows_by_number: dict[str, list[Call]] = {}
    for r in rows:
        rows_by_number.setdefault(r.customer_number, []).append(r)

    # hotline: every call answered? which node? after the edge noticed?
    hot_failed_before = [c for c in hot_calls.values() if c["final"] != 200
                         and t_kill <= c["invite"] < cut]
    hot_failed_after = [c for c in hot_calls.values() if c["final"] != 200 and c["invite"] >= cut]
    hot_in_flight = [c for c in hot_calls.values() if c["final"] != 200
                     and c["invite"] < t_kill and node_of_addr.get(c["node"]) == killed.name]
    hot_failed_other = [c for c in hot_calls.values() if c["final"] != 200
                        and c["invite"] < t_kill and c not in hot_in_flight]
    hot_to_killed_after = [c for c in hot_calls.values() if c["invite"] >= cut
                           and node_of_addr.get(c["node"]) == killed.name
                           and (back is None or c["invite"] < back)]

    # click-to-dial: placed on a node? answered by the customer?
    def click_ok(c: Click) -> bool:
        row = next((r for r in rows if r.id == c.call_id), None)
        return row is not None and row.state == CallState.ENDED \
            and row.outcome == CallOutcome.ANSWERED
    click_failed_before = [c for c in clicks if not click_ok(c) and t_kill <= c.at < cut]
    click_failed_after = [c for c in clicks if not click_ok(c) and c.at >= cut]
    # the dialing service refused: the manager's previous call died with the
    # node, and its row stays open (SETUP_GRACE) until someone closes it
    click_refused_after = [c for c in click_failed_after
                           if c.error and c.error.startswith("ValidationError")]
    click_failed_after = [c for c in click_failed_after if c not in click_refused_after]
    click_failed_other = [c for c in clicks if not click_ok(c) and c.at < t_kill]
    in_flight = [c for c in clicks if c.node == killed.name and c.at < t_kill
                 and not click_ok(c)]

    for c in [*click_failed_other, *click_failed_before, *click_failed_after][:10]:
        row = next((r for r in rows if r.id == c.call_id), None)
        print(f"[cluster] click {c.number} at {c.at - t0:.1f} s on {c.node}: "
              f"{c.error or ((row.state, row.outcome, row.sip_code) if row else 'no row')}",
              file=sys.stderr)
    # rows: one per call that reached a node
    reached = {caller for caller, c in hot_calls.items() if c["final"] == 200}
    reached |= {c.number for c in clicks if c.node is not None}
    acc = account_calls(rows, {n: 1 for n in reached}, None)
    final_numbers = {r.customer_number for r in rows if r.state in FINAL_STATES}
    for number in sorted(reached - final_numbers)[:10]:
        found = [(r.pbx_node, r.state, r.outcome) for r in rows_by_number.get(number, [])]
        hot = hot_calls.get(number)
        print(f"[cluster] no final row for {number}: {found or 'no row'}; "
              + (f"hotline at {hot['invite'] - t0:.1f} s via {node_of_addr.get(hot['node'])}"
                 if hot else "click-to-dial"), file=sys.stderr)
    open_rows = [r for r in rows if r.state not in FINAL_STATES]
    open_killed = [r for r in open_rows if r.pbx_node == killed.name]
    recordings_dir = {n.name: n.settings.recordings_dir for n in cl.nodes}
    named = [r for r in rows if r.recording_path]
    recorded = sum(1 for r in named if (recordings_dir[r.pbx_node] / r.recording_path).exists())

    per_node = Counter(node_of_addr.get(c["node"], "?") for c in hot_calls.values()
                       if c["final"] == 200)
    per_node.update(c.node for c in clicks if c.node)
    after_back = Counter(node_of_addr.get(c["node"], "?") for c in hot_calls.values()
                         if back is not None and c["invite"] >= back and c["final"] == 200)
    after_back.update(c.node for c in clicks if c.node and back is not None and c.at >= back)

    # cost per call, in the window [t0, kill) with every node up
    cpu0, cpu1 = v["cpu0"], v["cpu1"]
    spent = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    hot_window = [c for c in hot_calls.values() if t0 - 1 <= c["invite"] < t_kill]
    click_window = [c for c in clicks if c.at < t_kill and c.node]
    calls_window = len(hot_window) + len(click_window)
    node_calls = Counter(node_of_addr.get(c["node"], "?") for c in hot_window)
    node_calls.update(c.node for c in click_window)
    per_call = {part: spent[part] / calls_window for part in ("edge", "postgres", "sipp")} \
        if calls_window else {}
    floor = {k: v["idle"].get(k, 0.0) * v["t_cpu"] for k in spent}
    pg_marginal = (spent["postgres"] - floor["postgres"]) / calls_window if calls_window else 0.0
    node_costs = [spent[n.name] / node_calls[n.name] for n in cl.nodes if node_calls[n.name]]
    node_cost = sum(node_costs) / len(node_costs) if node_costs else float("nan")
    parts = {p: sum(spent[f"{n.name}/{p}"] for n in cl.nodes) / calls_window
             for p in ("asterisk", "bridge", "agi")} if calls_window else {}
    rate_window = calls_window / v["t_cpu"] if v["t_cpu"] else 0
    # the server's statements and CPU per call, the idle floor apart
    for line in statement_profile(v["statements"], v["idle_statements"], v["idle_s"],
                                  v["t_cpu"], calls_window):
        print(f"[cluster] {line}", file=sys.stderr)
    for line in pg_cpu_profile(spent, floor, calls_window):
        print(f"[cluster] {line}", file=sys.stderr)
    ms = 1000.0

    def fmt_s(t):
        return "not seen" if t is None else f"{t:.2f} s"

    table = [
        ("offered", f"{args.calls} calls ({len(hot_calls)} hotline, {len(clicks)} click-to-dial) "
                    f"at {args.rate:g} calls/s for {args.calls / args.rate:.0f} s; talk "
                    f"{args.talk:g} s (hotline caller {CALLER_TALK_S:g} s)"),
        ("nodes", f"{NODES} Asterisk nodes (each with bridge and FastAGI), Kamailio, one "
                  f"PostgreSQL; {killed.name} SIGKILLed at {t_kill - t0:.0f} s"),
        ("edge noticed the killed node after", fmt_s(None if noticed is None else noticed - t_kill)),
        ("new calls failed after the edge noticed (goal 0)",
         f"{len(hot_failed_after) + len(click_failed_after)} "
         f"({len(hot_failed_after)} hotline, {len(click_failed_after)} click-to-dial)"),
        ("click-to-dial refused after that: already on a call",
         f"{len(click_refused_after)} (by {len({c.number[3:7] for c in click_refused_after})} "
         f"managers whose previous call died with the node: its row is open until the lost "
         f"node's calls are closed, {nodes.LOST_AFTER.seconds} s after its last beat)"),
        ("hotline calls between the kill and the edge noticing",
         f"{sum(1 for c in hot_calls.values() if t_kill <= c['invite'] < cut)} sent, "
         f"{len(hot_failed_before)} failed (the rest failed over after "
         f"{1.5:g} s); after: {len(hot_to_killed_after)} reached the killed node"),
        ("click-to-dial between the kill and the edge noticing",
         f"{sum(1 for c in clicks if t_kill <= c.at < cut)} asked, "
         f"{len(click_failed_before)} failed"),
        ("calls in progress on the killed node at the kill",
         f"{len(hot_in_flight)} hotline calls ringing there never answered (the caller gave "
         f"up after {CALLER_PATIENCE_S} s), {len(in_flight)} click-to-dial lost"),
        ("failed before the kill", f"{len(hot_failed_other)} hotline, "
                                   f"{len(click_failed_other)} click-to-dial"),
        ("calls that reached a node: rows",
         f"{acc['placed']} calls, {acc['rows']} rows, {acc['doubled']} doubled, "
         f"{acc['lost']} without a final row ({len(open_killed)} open on the killed node)"),
        ("recordings", f"{recorded} of the {len(named)} rows that name one have their file on "
                       f"their node"),
        ("node back: the edge sends to it again after",
         fmt_s(None if back is None else back - t_back)
         + f" (Asterisk start {v['started'] - t_back:.1f} s); calls it took after: "
           f"{after_back.get(killed.name, 0)} of {sum(after_back.values())}"),
        ("calls per node", ", ".join(f"{n.name} {per_node.get(n.name, 0)}" for n in cl.nodes)),
        ("cost window", f"{calls_window} calls in {v['t_cpu']:.0f} s ({rate_window:.1f} calls/s), "
                        f"all nodes up"),
    ]
    if per_call:
        table += [
            ("CPU per call: Kamailio (edge)", f"{per_call['edge'] * ms:.2f} ms"),
            ("CPU per call: PostgreSQL (all backends)", f"{per_call['postgres'] * ms:.2f} ms"),
            ("CPU per call: PostgreSQL beyond its idle floor",
             f"{pg_marginal * ms:.2f} ms (the floor: {floor['postgres'] / calls_window * ms:.2f} "
             f"ms a call at this rate)"),
            ("CPU per call: one node (Asterisk + bridge + FastAGI)",
             f"{node_cost * ms:.1f} ms (Asterisk {parts['asterisk'] * ms:.1f}, bridge "
             f"{parts['bridge'] * ms:.1f}, FastAGI {parts['agi'] * ms:.1f}; per node "
             + ", ".join(f"{c * ms:.0f}" for c in node_costs) + ")"),
            ("CPU per call: the SIPp parties (load generator)", f"{per_call['sipp'] * ms:.1f} ms"),
        ]
        for label, cost in (("Kamailio", per_call["edge"]), ("PostgreSQL", per_call["postgres"]),
                            ("PostgreSQL beyond its idle floor", pg_marginal)):
            if cost > 0:
                table.append((f"{label} saturates at (same cores as a node)",
                              f"{node_cost / cost:.0f} nodes' worth of calls "
                              f"(goal >= 10); {1 / cost:.0f} calls/s per core"))
        table.append(("one node per core", f"{1 / node_cost:.1f} calls/s"))
        idle = v["idle"]
        table.append(("idle (no calls), CPU-seconds per second",
                      f"Kamailio {idle['edge']:.3f}, PostgreSQL {idle['postgres']:.3f}, a node "
                      f"{sum(idle[n.name] for n in cl.nodes) / len(cl.nodes):.3f} (counted "
                      f"in the per-call figures above, but for PostgreSQL's beyond its floor)"))
    table.append(("load average", f"{v['load_before']} at the start, {v['load_after']} at the "
                                  f"end (2 cores, shared)"))
    failed_after = len(hot_failed_after) + len(click_failed_after)
    last = (f"cluster: noticed {fmt_s(None if noticed is None else noticed - t_kill)}; "
            f"failed after {failed_after} (refused {len(click_refused_after)}); "
            f"rows {acc['rows']}/{acc['placed']} doubled "
            f"{acc['doubled']} open {len(open_rows)}; back {fmt_s(None if back is None else back - t_back)}"
            f" took {after_back.get(killed.name, 0)}")
    if per_call:
        last += (f"; CPU/call ms edge={per_call['edge'] * ms:.2f} pg={per_call['postgres'] * ms:.2f}"
                 f" (beyond idle {pg_marginal * ms:.2f})"
                 f" node={node_cost * ms:.1f}; shared parts carry "
                 f"{min(node_cost / max(per_call['edge'], 1e-9), node_cost / max(per_call['postgres'], 1e-9)):.0f}"
                 f" nodes; load {v['load_after']}")
    return table, last


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.cluster",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="200 calls at 4/s (under 5 min)")
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--rate", type=float, default=10, help="calls per second, both kinds")
    p.add_argument("--hotline", type=float, default=0.7, help="share of hotline calls")
    p.add_argument("--talk", type=float, default=1.0, help="seconds a click-to-dial customer talks")
    p.add_argument("--kill-at", type=float, default=0.4, help="when the node dies (run fraction)")
    p.add_argument("--return-at", type=float, default=0.7, help="when it starts again")
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.rate = min(args.calls, 200), min(args.rate, 4)
    if not 0 < args.kill_at < args.return_at < 1:
        p.error("--kill-at and --return-at are fractions of the run, kill first: "
                "e.g. --kill-at 0.4 --return-at 0.7.")
    table, last = run(args)
    print("| figure | value |")
    print("|---|---|")
    for label, value in table:
        print(f"| {label} | {value} |")
    print(last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
