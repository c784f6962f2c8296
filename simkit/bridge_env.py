"""A running AMI bridge (thread) on a fresh database, beside the session's
real Asterisk, with a county, a manager per desk phone and customers."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import threading
import time

from sqlalchemy import select

from ami_bridge.bridge import Bridge
from ami_bridge.commands import CommandServer
from khhf import bridge_client, config, db
from khhf.calls.states import FINAL_STATES
from khhf.models import Call, Customer, Manager, Task, TaskType, User
from khhf.services import nodes
from khhf.services.dialing import move_to_node, request_call
from simkit import factories
from simkit.harness import free_port

UNIFIED = "13900000000"
# the county's pool: the primary number and a second one (khhf.services.number_pool)
POOL = (UNIFIED, "13900000002")


class NoPbx:
    """In place of a PbxHarness where a test needs only BridgeEnv's database
    and seed: a fresh install's settings, no Asterisk."""

    def __init__(self, workdir, **settings):
        self.settings = config.write_new(workdir / "khhf.conf", home=workdir, **settings)


class BridgeEnv:
    """`writer_process`: the bridge writes through its writer process, as
    the daemon does (ami_bridge/writer.py). Off by default: the tests start
    dozens of bridges and each writer is a Python process to start; the
    writer has its own tests and the drills run the real daemon. On with
    KHHF_TEST_BRIDGE_WRITER=process, to run every bridge test through it."""

    def __init__(self, harness, workdir, database_url: str | None = None,
                 writer_process: bool | None = None, seed: bool = True):
        """`seed`: a county, managers and customers (off for a second node's
        bridge on a database another BridgeEnv seeded)."""
        self.harness = harness
        self.writer_process = writer_process if writer_process is not None else \
            os.environ.get("KHHF_TEST_BRIDGE_WRITER") == "process"
        self.settings = dataclasses.replace(
            harness.settings,
            database_url=database_url or f"sqlite:///{workdir / 'bridge.db'}",
            bridge_port=free_port(kind=1), calling_window="00:00-24:00",
            manager_ring_seconds=4, customer_ring_seconds=3, reconcile_seconds=1)
        self.engine = db.make_engine(self.settings.database_url)
        db.create_schema(self.engine)
        self.sessions = db.session_factory(self.engine)
        self.state_dir = workdir / "bridge-state"
        if seed:
            self._seed()
        self.thread = None

    def _seed(self):
        with db.unit_of_work(self.sessions) as s:
            county = factories.county(s, "demo", "示范县", unified=UNIFIED, more=POOL[1:])
            factories.task_type(s)
            for ext in ("8001", "8002", "8003"):
                factories.manager(s, county, f"m{ext}", employee_no=f"E{ext}", desk=ext,
                                  mobile=f"1370000{ext}", display_name=f"经理{ext}")

    # -- bridge life cycle --------------------------------------------------------
    def start(self):
        self.stop_flag = None
        started = threading.Event()

        def run():
            async def main():
                self.loop = asyncio.get_running_loop()
                self.stop_flag = asyncio.Event()
                self.bridge = Bridge(self.settings, self.engine, state_dir=self.state_dir,
                                     writer_process=self.writer_process)
                server = await CommandServer(self.bridge).start()
                started.set()
                try:
                    await self.bridge.run(self.stop_flag)
                finally:
                    server.close()
                    await server.wait_closed()
            asyncio.run(main())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10), "bridge did not start"
        deadline = time.monotonic() + 10
        while not self.bridge.connected.is_set():
            assert time.monotonic() < deadline, "bridge did not connect to the AMI"
            time.sleep(0.05)
        return self

    def stop(self):
        if self.thread is not None:
            self.loop.call_soon_threadsafe(self.stop_flag.set)
            self.thread.join(20)
            assert not self.thread.is_alive(), "bridge did not stop"
            self.thread = None

    def kill(self):
        """Stop the bridge abruptly: events queued or held in memory are
        dropped, like a crash (what it spilled to its file stays)."""
        bridge = self.bridge

        def drop():
            while not bridge.queue.empty():
                bridge.queue.get_nowait()
                bridge.queue.task_done()
            bridge.backlog.memory.clear()
            self.stop_flag.set()
        self.loop.call_soon_threadsafe(drop)
        self.thread.join(20)
        self.thread = None

    # -- the web UI on this database ---------------------------------------------
    def web_app(self, login: str = "m8001"):
        """(a web UI app on this database and bridge, a fresh password for `login`)."""
        from khhf.services.accounts import hash_password
        from webui import create_app
        password = secrets.token_urlsafe(12)
        with db.unit_of_work(self.sessions) as s:
            s.scalar(select(User).where(User.username == login)).password_hash = \
                hash_password(password)
        app = create_app(self.settings)
        return app, password

    # -- calls -------------------------------------------------------------------
    def task_for(self, ext: str, phone: str, task_type: str | None = None) -> int:
        """A task of `ext`'s manager for `phone`, of the type with code
        `task_type` (default: factories.task_type's)."""
        with db.unit_of_work(self.sessions) as s:
            manager = s.scalar(select(Manager).where(Manager.desk_extension == ext))
            customer = s.scalar(select(Customer).where(Customer.phone == phone))
            if customer is None:
                customer = factories.customer(s, manager.county, phone, manager, name="客户")
            type_ = s.scalar(select(TaskType).where(TaskType.code == task_type)) \
                if task_type else None
            return factories.task(s, customer, manager, type_).id

    def dial(self, ext: str, phone: str, device: str | None = None,
             task_type: str | None = None) -> int:
        """Click-to-dial as the manager at `ext`: the service, then the bridge;
        `device` "mobile" makes it a two-leg call through the manager's mobile;
        the task is of the type with code `task_type` (default: revisit)."""
        task_id = self.task_for(ext, phone, task_type)
        # as the web does: behind an edge, the live nodes by load
        with self.sessions() as s:
            targets = nodes.dial_targets(s, self.settings)
        live, targets = bridge_client.live_across(targets)
        with db.unit_of_work(self.sessions) as s:
            user = s.scalar(select(User).where(User.username == f"m{ext}"))
            call = request_call(s, targets[0], user, task_id, live=live, device=device)
            call_id = call.id

        def move(node):
            with db.unit_of_work(self.sessions) as s:
                return move_to_node(s, call_id, node.pbx_name)
        bridge_client.dial_across(targets, call_id, move)
        return call_id

    def wait_state(self, call_id: int, state: str, timeout: float = 30) -> None:
        """Wait until the call row reaches `state`."""
        deadline = time.monotonic() + timeout
        while True:
            with self.sessions() as s:
                now = s.get(Call, call_id).state
            if now == state:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"call {call_id} not {state} in {timeout} s: state {now}")
            time.sleep(0.05)

    def wait_final(self, call_id: int, timeout: float = 30, recording: bool = False) -> Call:
        deadline = time.monotonic() + timeout
        while True:
            with self.sessions() as s:
                call = s.get(Call, call_id)
                done = call.state in FINAL_STATES and (
                    not recording or call.recording_sha256 is not None)
                if done:
                    s.expunge(call)
                    call.task_snapshot = (s.get(Task, call.task_id).status,
                                          s.get(Task, call.task_id).attempts)
                    return call
            if time.monotonic() > deadline:
                raise AssertionError(f"call {call_id} not final in {timeout} s: state {call.state}")
            time.sleep(0.1)
