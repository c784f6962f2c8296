"""`khhf demo`: the whole system on one machine, with simulated phones.

    khhf demo seed   create the demo county, users and customers; print log-ins
    khhf demo run    start the PBX, SIPp desk phones and carrier, the AMI bridge,
                     the AGI service and the web UI; Ctrl-C stops everything

The simulated desk phones answer every call; the simulated carrier answers
as the customer and hangs up after `--talk` seconds, so a click-to-dial in
the web UI goes all the way through the real Asterisk, with recordings.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import time

from khhf import config as config_mod
from khhf import db
from pbxctl import pbx
from simkit.sipp import Sipp, free_port, register_desk_phone


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the demo system with simulated phones")
    p.add_argument("action", choices=["seed", "run"])
    p.add_argument("--talk", type=int, default=20, help="seconds a simulated customer talks")
    p.set_defaults(func=cmd_demo)


def seed(settings) -> dict:
    from simkit import seed as demo
    engine = db.make_engine(settings.database_url)
    try:
        if not db.has_schema(engine):
            db.create_schema(engine)
        with db.unit_of_work(db.session_factory(engine)) as session:
            return demo.seed(session)
    finally:
        engine.dispose()


def print_logins(settings, result) -> None:
    print(f"\nKHHF demo: http://{settings.web_host}:{settings.web_port}/")
    print(f"county {result['county']['name']}, unified number {result['county']['unified_number']}")
    for username, password in result["passwords"].items():
        print(f"  log in as {username:<12} password {password}")
    print("simulated desk phones:", ", ".join(
        m["desk_extension"] for m in result["managers"].values()), flush=True)


def cmd_demo(args) -> int:
    settings = config_mod.load(args.config)
    result = seed(settings)
    if args.action == "seed":
        print_logins(settings, result)
        return 0
    return run(settings, result, talk_seconds=args.talk)


def run(settings, result, talk_seconds: int = 20) -> int:
    from .main import desk_extensions
    extensions = desk_extensions(settings)
    instance = pbx.Pbx(settings, extensions)
    instance.up()
    workdir = settings.home / "demo-phones"
    parties: list[Sipp] = []
    services: list[subprocess.Popen] = []
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for ext in extensions:
            port = free_port()
            register_desk_phone(settings, ext, port, workdir, expires=86400)
            parties.append(Sipp("answer.xml", workdir, local_ip="127.0.0.1", port=port,
                                calls=None).start())
        parties.append(Sipp("answer_hangup.xml", workdir, local_ip=settings.trunk_host,
                            port=settings.trunk_port, duration_ms=talk_seconds * 1000,
                            calls=None).start())
        modules = ["ami_bridge", "webui", "jobs"]  # jobs: campaign rounds (listens nowhere)
        if importlib.util.find_spec("agi.__main__") is not None:
            modules.insert(1, "agi")
        env = dict(__import__("os").environ)
        if settings.config_path:
            env["KHHF_CONFIG"] = str(settings.config_path)
        for module in modules:
            out = open(logs / f"{module}.log", "ab")
            services.append(subprocess.Popen([sys.executable, "-m", module], env=env,
                                             stdout=out, stderr=subprocess.STDOUT))
        ports = {"ami_bridge": (settings.bridge_host, settings.bridge_port),
                 "agi": (settings.agi_host, settings.agi_port),
                 "webui": (settings.web_host, settings.web_port)}
        for proc, module in ((p, m) for p, m in zip(services, modules) if m in ports):
            _wait_listening(module, *ports[module], proc=proc, log=logs / f"{module}.log")
        print_logins(settings, result)
        print(f"logs in {logs}; press Ctrl-C to stop", flush=True)
        stop = {"now": False}
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.update(now=True))
        while not stop["now"]:
            for proc, module in zip(services, modules):
                if proc.poll() is not None:
                    print(f"khhf demo: {module} exited ({proc.returncode}); see "
                          f"{logs / (module + '.log')}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        for proc in services:
            if proc.poll() is None:
                proc.terminate()
        for proc in services:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for party in parties:
            party.stop()
        instance.down()


def _wait_listening(name, host, port, proc, log, timeout=60.0) -> None:
    """Wait until service `name` accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"khhf demo: {name} did not start listening on {host}:{port}; "
                             f"see {log}")
        time.sleep(0.1)
