"""`khhf demo`: the whole system on one machine, with simulated phones.

    khhf demo seed   create the demo county, users and customers; print log-ins
    khhf demo run    start the PBX, SIPp desk phones and carrier, the AMI bridge,
                     the AGI service, the SMS gateway and the web UI, and keep
                     them running (a part that exits is reported and restarted,
                     as systemd does in production); Ctrl-C stops everything

The simulated desk phones answer every call; the simulated carrier answers
as the customer and hangs up after `--talk` seconds, so a click-to-dial in
the web UI goes all the way through the real Asterisk, with recordings.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

from khhf import config as config_mod
from khhf import db
from pbxctl import pbx
from simkit.sipp import Sipp, free_port, register_desk_phone

from .supervise import Child, RunningPid, Supervisor

# a simulated desk phone's registration: Asterisk's maximum (pjsip.conf)
REGISTRATION_SECONDS = 86400
# how long a simulated desk phone stays on the line after the customer's talk
# time (it answered a moment before the customer): it hears the keypad
# result's prompt begin, then hangs up
DESK_LISTENS_SECONDS = 3


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the demo system with simulated phones")
    p.add_argument("action", choices=["seed", "run"])
    p.add_argument("--talk", type=int, default=20, help="seconds a simulated customer talks")
    p.set_defaults(func=cmd_demo)


def seed(settings) -> dict:
    from khhf import migrations
    from simkit import seed as demo
    engine = db.open_database(settings)  # `khhf init` made it
    try:
        # what `khhf db check` says: at the newest revision, matching the models
        problem = migrations.check(engine)
        if problem:
            raise migrations.SchemaError(problem)
        print(f"database at revision {migrations.head()}, matching the models", flush=True)
        with db.unit_of_work(db.session_factory(engine)) as session:
            return demo.seed(session)
    finally:
        engine.dispose()


def print_logins(settings, result) -> None:
    print(f"\nKHHF demo: http://{settings.web_host}:{settings.web_port}/")
    county = result["county"]
    print(f"county {county['name']}, unified numbers {', '.join(county['unified_numbers'])} "
          f"(primary {county['unified_number']})")
    for username, password in result["passwords"].items():
        print(f"  log in as {username:<12} password {password}")
    print("simulated desk phones:", ", ".join(
        m["desk_extension"] for m in result["managers"].values()), flush=True)
    if result.get("supervisor_desk"):
        print(f"the supervisor's desk phone (the live view's listen-in rings it): "
              f"{result['supervisor_desk']}", flush=True)


def cmd_demo(args) -> int:
    settings = config_mod.load(args.config)
    result = seed(settings)
    if args.action == "seed":
        print_logins(settings, result)
        return 0
    return run(settings, result, talk_seconds=args.talk)


def run(settings, result, talk_seconds: int = 20) -> int:
    """Run the whole demo until SIGINT/SIGTERM, restarting whatever exits."""
    from .pbx import desk_extensions
    extensions = desk_extensions(settings)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    supervisor = Supervisor()
    try:
        workdir = settings.home / "demo-phones"
        # the carrier first: the PBX asks the trunk at once (qualify), and a
        # trunk found unreachable stays so until its next ask
        # (trunk_qualify_seconds), refusing calls meanwhile
        supervisor.add(_sipp_child("carrier", lambda: Sipp(
            "answer_hangup.xml", workdir, local_ip=settings.trunk_host, port=settings.trunk_port,
            duration_ms=talk_seconds * 1000, calls=None, run_limit=None)))
        pbx_child = supervisor.add(_pbx_child(settings, extensions))
        phones = [supervisor.add(_desk_phone_child(settings, ext, workdir, talk_seconds))
                  for ext in extensions]

        def register_again():
            # a restarted Asterisk may have lost the registrations
            for phone in phones:
                supervisor.restart(phone, "to register with the restarted PBX")
        pbx_child.on_restart.append(register_again)
        modules = ["ami_bridge", "webui"]
        if importlib.util.find_spec("agi.__main__") is not None:
            modules.insert(1, "agi")
        ports = {"ami_bridge": (settings.bridge_host, settings.bridge_port),
                 "agi": (settings.agi_host, settings.agi_port),
                 "webui": (settings.web_host, settings.web_port)}
        for module in modules:
            child = supervisor.add(_service_child(settings, module, logs))
            _wait_listening(module, *ports[module], proc=child.proc, log=child.log,
                            stop=stop)
        # the SMS gateway listens on nothing: with no smsc_host (the demo's
        # default) it keeps the outbox and inbox in the database, shown to
        # the admin under 短信
        supervisor.add(_service_child(settings, "smsgw", logs))
        supervisor.add(_service_child(settings, "jobs", logs))  # campaign rounds; no port
        if settings.sync_desk_phones:
            # the PBX's owner adds new managers' desk phones (as the khhf-phones unit)
            supervisor.add(_service_child(settings, "khhfcli.main", logs, name="desk phones",
                                          args=("pbx", "sync", "--every", "5")))
        if stop["now"]:
            return 0
        print_logins(settings, result)
        for phone in phones:
            print(f"  {phone.name}: {phone.detail}")
        print(f"logs in {logs}; a part that exits is restarted; press Ctrl-C to stop",
              flush=True)
        while not stop["now"]:
            supervisor.check()
            time.sleep(0.5)
        return 0
    finally:
        supervisor.stop_all()


def _pbx_child(settings, extensions) -> Child:
    instance = pbx.Pbx(settings, extensions)

    def start():
        pid = instance.up()
        return getattr(instance, "_proc", None) or RunningPid(pid)
    # down() also unmounts and removes the pid file after a crash
    return Child("Asterisk (PBX)", start, instance.down, log=instance.log_file)


def _sipp_child(name: str, make, before=None) -> Child:
    """A SIPp party, made afresh by `make()` at every start (new trace files)."""
    holder: dict = {}

    def start():
        if before:
            before()
        holder["sipp"] = make().start(new_session=True)
        return holder["sipp"].proc

    def stop():
        if holder.get("sipp"):
            holder.pop("sipp").stop()
    return Child(name, start, stop)


def _desk_phone_child(settings, extension: str, workdir, talk_seconds: int = 20) -> Child:
    """A desk phone answering every call on its own port. Like a real phone,
    it registers each time it starts (from the port it then answers on).
    It presses no keys: a few seconds after the customer hung up it hangs
    up on the keypad result's prompt, as a manager who leaves the result
    to the SMS or the web does."""
    port = free_port()
    child = _sipp_child(
        f"desk phone {extension}",
        lambda: Sipp("answer_hangup.xml", workdir, local_ip="127.0.0.1", port=port,
                     calls=None, run_limit=None,
                     duration_ms=(talk_seconds + DESK_LISTENS_SECONDS) * 1000),
        before=lambda: register_desk_phone(settings, extension, port, workdir,
                                           expires=REGISTRATION_SECONDS))
    child.detail = f"SIPp on 127.0.0.1:{port}"
    # SIPp cannot refresh a registration from the port it answers on: start
    # the phone afresh (it registers again) well before the registration expires
    child.renew_after = REGISTRATION_SECONDS / 2
    child.renew_why = "to register again before its registration expires"
    return child


def _service_child(settings, module: str, logs, name: str | None = None,
                   args: tuple[str, ...] = ()) -> Child:
    """`python -m module [args]` with the demo's config, its output in
    logs/<name or module>.log."""
    env = dict(os.environ)   # KHHF_* overrides reach the services too
    config = ["--config", str(settings.config_path)] if settings.config_path else []
    name = name or module
    log = logs / f"{name.replace(' ', '-')}.log"
    holder: dict = {}

    def start():
        holder["out"] = open(log, "ab")
        holder["proc"] = subprocess.Popen([sys.executable, "-m", module, *config, *args],
                                          env=env, stdout=holder["out"],
                                          stderr=subprocess.STDOUT, start_new_session=True)
        return holder["proc"]

    def stop():
        proc = holder.pop("proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if holder.get("out"):
            holder.pop("out").close()
    from khhf.daemon import EXIT_CONFIG
    return Child(name, start, stop, log=log, final_codes=(EXIT_CONFIG,))


def _wait_listening(name, host, port, proc, log, stop=None, timeout=60.0) -> None:
    """Wait until service `name` accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while not (stop and stop["now"]):
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"khhf demo: {name} did not start listening on {host}:{port}; "
                             f"see {log}")
        time.sleep(0.1)
