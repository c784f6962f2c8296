"""Real peers for the tests: an Asterisk instance and SIPp parties.

`PbxHarness` starts a real Asterisk (pbxctl.pbx) on free loopback ports with
its own run directory. `Sipp` runs one SIPp process playing a desk phone,
the carrier trunk (answering as the customer) or a calling customer, with
RTP audio, and parses its message trace so a test can assert on exactly
what each party received.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from amiclient import AmiClient
from khhf import config
from pbxctl import pbx
from simkit.sipp import SIPP, SipMessage, Sipp, free_port, register_desk_phone, wav_stats  # noqa: F401


class PbxHarness:
    """A real Asterisk on free loopback ports, plus SIPp parties around it."""

    def __init__(self, workdir: Path, name: str | None = None,
                 desk_extensions=("8001", "8002", "8003"), **overrides):
        """`overrides`: settings for this PBX (e.g. trunk_qualify_seconds=2).
        The trunk is not qualified unless asked: the tests' SIPp carriers
        count an OPTIONS as one of their calls (-m)."""
        # unique per process: two test sessions on one machine must not share a mount
        name = name or f"test{os.getpid()}"
        self.workdir = Path(workdir)
        rtp = free_port(span=201)
        rtp += rtp % 2  # Asterisk wants an even RTP start
        self.settings = config.write_new(
            self.workdir / "khhf.conf", home=self.workdir, pbx_name=name,
            sip_port=free_port(), ami_port=free_port(kind=socket.SOCK_STREAM),
            rtp_start=rtp, rtp_end=rtp + 199,
            trunk_host="127.0.0.2", trunk_port=free_port("127.0.0.2"),
            asterisk_root=os.environ.get("KHHF_ASTERISK_ROOT", config.Settings.asterisk_root),
            **{"trunk_qualify_seconds": 0, **overrides},
        )
        self.pbx = pbx.Pbx(self.settings, list(desk_extensions))
        self.parties: list[Sipp] = []

    def __enter__(self):
        self.pbx.up()
        return self

    def __exit__(self, *exc):
        for party in self.parties:
            party.stop()
        self.pbx.down()

    @property
    def sip_target(self) -> str:
        return f"{self.settings.sip_host}:{self.settings.sip_port}"

    def party(self, scenario: str, **kwargs) -> Sipp:
        sipp = Sipp(scenario, self.workdir / "sipp", **kwargs)
        self.parties.append(sipp)
        return sipp

    def register_desk_phone(self, extension: str, port: int | None = None) -> int:
        """Register desk phone `extension` from 127.0.0.1:port; return the port."""
        port = port or free_port()
        self.parties.append(register_desk_phone(self.settings, extension, port,
                                                self.workdir / "sipp"))
        return port

    def desk_phone(self, extension: str, scenario: str = "answer.xml", **kwargs) -> Sipp:
        """A registered desk phone, answering on its registered contact."""
        port = self.register_desk_phone(extension)
        return self.party(scenario, local_ip="127.0.0.1", port=port, **kwargs).start()

    def trunk(self, scenario: str = "answer_hangup.xml", **kwargs) -> Sipp:
        """The carrier trunk, answering as the customer."""
        return self.party(scenario, local_ip=self.settings.trunk_host,
                          port=self.settings.trunk_port, **kwargs).start()

    def ami(self, event_mask: str = "on") -> AmiClient:
        s = self.settings
        return AmiClient(s.ami_host, s.ami_port, s.ami_user, s.ami_secret, event_mask=event_mask)

    def run(self, coro):
        return asyncio.run(coro)


class AgiThread:
    """The FastAGI service (agi.server) in a thread with its own event loop,
    on a free loopback port; `stop()` and `start()` again to test the
    dialplan without it. Appended for the hotline tests and bench."""

    def __init__(self, session_factory, key: str, routes=None, host: str = "127.0.0.1",
                 port: int | None = None):
        from agi.routes import ROUTES
        self.session_factory = session_factory
        self.key = key  # khhf.config.agi_key of the PBX's settings
        self.routes = ROUTES if routes is None else routes
        self.host = host
        self.port = port or free_port(host, kind=socket.SOCK_STREAM)
        self._loop = None
        self._thread = None
        self._killed = False
        self.server = None

    def start(self) -> "AgiThread":
        import threading

        from agi.server import FastAgiServer
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._killed = False

        def run():
            asyncio.set_event_loop(self._loop)
            self.server = FastAgiServer(self.routes, self.session_factory, key=self.key)
            self._loop.run_until_complete(self.server.start(self.host, self.port))
            ready.set()
            self._loop.run_forever()
            if self._killed:  # a crash: whatever was in flight is simply gone
                tasks = asyncio.all_tasks(self._loop)
                for task in tasks:
                    task.cancel()
                self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self.server.close()
                if self.server.directory is not None:  # as the kernel would close it
                    self._loop.run_until_complete(self.server.directory.close())
            else:
                self._loop.run_until_complete(self.server.aclose())
            self._loop.run_until_complete(self.server.server.wait_closed())
            self._loop.close()
        self._thread = threading.Thread(target=run, name=f"agi-{self.port}", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the FastAGI service did not start"
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def kill(self) -> None:
        """Stop as a killed process would: no more connections, and the
        work in flight (a write after the answer) never done."""
        self._killed = True
        self.stop()


class EdgeHarness:
    """The SIP edge (Kamailio, pbxctl.edge) in front of running PbxHarness
    nodes whose settings name it (edge_host, edge_port), on loopback, with
    the nodes' shared PostgreSQL. The carrier is at 127.0.0.2; desk phones
    register with the edge from 127.0.0.1."""

    def __init__(self, workdir: Path, nodes, desk_extensions=("8001",), **overrides):
        from pbxctl.edge import Edge
        first = nodes[0].settings
        self.workdir = Path(workdir)
        self.settings = config.write_new(
            self.workdir / "khhf.conf", home=self.workdir, database_url=first.database_url,
            edge_host=first.edge_host, edge_port=first.edge_port,
            edge_nodes=",".join(f"{n.settings.sip_host}:{n.settings.sip_port}" for n in nodes),
            trunk_host="127.0.0.2", trunk_port=free_port("127.0.0.2"),
            # one site, one secret: the phones' passwords are the nodes'
            phone_secret=first.phone_secret, **overrides)
        self.edge = Edge(self.settings, list(desk_extensions))
        self.parties: list[Sipp] = []

    @staticmethod
    def node_settings(database_url: str, edge_port: int) -> dict:
        """PbxHarness overrides for a node behind an edge on 127.0.0.1:edge_port;
        the FastAGI address has nobody listening (the hotline's fallback)."""
        return {"database_url": database_url, "edge_host": "127.0.0.1", "edge_port": edge_port,
                "agi_port": free_port(kind=socket.SOCK_STREAM)}

    def __enter__(self):
        from khhf import cluster, db
        engine = db.make_engine(self.settings.database_url)
        try:
            cluster.ensure_kamailio_tables(engine)
        finally:
            engine.dispose()
        self.edge.up()
        return self

    def __exit__(self, *exc):
        for party in self.parties:
            party.stop()
        self.edge.down()

    @property
    def sip_target(self) -> str:
        return f"{self.settings.edge_host}:{self.settings.edge_port}"

    def node_states(self) -> dict[str, str]:
        """{node URI: up | down | off}, as the edge's dispatcher has them."""
        return dict(self.edge.nodes())

    def party(self, scenario: str, **kwargs) -> Sipp:
        sipp = Sipp(scenario, self.workdir / "sipp", **kwargs)
        self.parties.append(sipp)
        return sipp

    def register_desk_phone(self, extension: str, port: int | None = None) -> int:
        """Register desk phone `extension` with the edge from 127.0.0.1:port."""
        port = port or free_port()
        self.parties.append(register_desk_phone(self.settings, extension, port,
                                                self.workdir / "sipp", remote=self.sip_target))
        return port

    def desk_phone(self, extension: str, scenario: str = "edge_answer.xml", **kwargs) -> Sipp:
        """A desk phone registered with the edge, answering on its contact."""
        port = self.register_desk_phone(extension)
        return self.party(scenario, local_ip="127.0.0.1", port=port, **kwargs).start()

    def carrier(self, scenario: str = "edge_answer_hangup.xml", **kwargs) -> Sipp:
        """The carrier trunk behind the edge, answering as the customer."""
        return self.party(scenario, local_ip=self.settings.trunk_host,
                          port=self.settings.trunk_port, **kwargs).start()

    def hotline_calls(self, unified: str, calls: int, rate: float | None = None) -> Sipp:
        """The carrier sending `calls` customers' calls to `unified` through the edge."""
        return self.party("edge_hotline_call.xml", local_ip=self.settings.trunk_host,
                          port=free_port(self.settings.trunk_host), remote=self.sip_target,
                          service=unified, keys={"caller": "13700001111"}, calls=calls,
                          rate=rate).start()
