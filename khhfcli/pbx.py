"""`khhf pbx ...`: the Asterisk PBX, run by its owner (root).

    khhf pbx build             build the cached Asterisk root (Debian sid)
    khhf pbx up|down|status    run the PBX instance
    khhf pbx restart [--graceful]
                               stop and start it; --graceful: refuse new calls
                               now, restart when the calls in progress end
    khhf pbx reload            render the desk phones again from the database
    khhf pbx sync [--every S]  add new managers' desk phones to the running PBX
    khhf pbx phones            desk-phone SIP credentials, for provisioning

PBX control (pbxctl) is given the desk phones; the database is asked here,
through the domain (khhf.services.accounts.active_desk_extensions).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from khhf import config as config_mod


def register(subparsers) -> None:
    """Add the `pbx` command to khhf's argument parser."""
    p = subparsers.add_parser("pbx", help="the Asterisk PBX")
    p.add_argument("action", choices=["build", "up", "down", "restart", "status", "reload", "sync",
                                      "phones"])
    p.add_argument("--every", type=float, metavar="SECONDS",
                   help="sync: repeat every SECONDS until stopped (the khhf-phones unit)")
    p.add_argument("--graceful", action="store_true",
                   help="restart: no new calls from now; restart when the last call ends")
    p.set_defaults(func=cmd_pbx)


def desk_extensions(settings) -> list[str]:
    """Desk extensions of active managers, from the database (none before
    `khhf init`: the PBX runs without one, and never creates it)."""
    from khhf import db
    from khhf.services.accounts import active_desk_extensions
    try:
        engine = db.open_database(settings)
    except db.NoDatabase:
        return []
    try:
        with db.session_factory(engine)() as session:
            return active_desk_extensions(session)
    finally:
        engine.dispose()


def cmd_pbx(args) -> int:
    from pbxctl import pbx
    settings = config_mod.load(args.config)
    if args.action == "build":
        pbx.build_root(settings.asterisk_root, settings.debian_mirror or None)
        print(f"Asterisk root ready at {settings.asterisk_root}")
        return 0
    instance = pbx.Pbx(settings, desk_extensions(settings))
    if args.action == "up":
        pid = instance.up()
        print(f"PBX {settings.pbx_name!r} up (pid {pid}); run directory {instance.run_dir}")
    elif args.action == "down":
        was = instance.down()
        print(f"PBX {settings.pbx_name!r} {'stopped' if was else 'was not running'}")
    elif args.action == "restart" and args.graceful:
        instance.restart_gracefully()
        print(f"PBX {settings.pbx_name!r} restarting gracefully: new calls are refused from "
              f"now; it restarts when the last call in progress ends (`khhf pbx status`)")
    elif args.action == "restart":
        instance.down()
        pid = instance.up()
        print(f"PBX {settings.pbx_name!r} restarted (pid {pid}); calls in progress were cut: "
              f"`khhf pbx restart --graceful` lets them finish")
    elif args.action == "status":
        print(instance.status())
    elif args.action == "reload":
        instance.reload_phones(instance.desk_extensions)
        print(f"desk phones reloaded: {', '.join(instance.desk_extensions) or 'none'}")
    elif args.action == "sync":
        return sync_phones(settings, instance, args.every)
    elif args.action == "phones":
        # behind a SIP edge the phones register there (docs/cluster.md)
        where = (f"{settings.edge_host}:{settings.edge_port}" if settings.edge_host
                 else f"{settings.sip_host}:{settings.sip_port}")
        for ext in instance.desk_extensions:
            print(f"{ext}\tsip:{ext}@{where}\tpassword {pbx.phone_password(settings, ext)}")
    return 0


def sync_phones(settings, instance, every: float | None = None) -> int:
    """`khhf pbx sync`: add the desk phones of managers added since the PBX
    started (Pbx.add_phones). The PBX's owner runs it, as root like `khhf pbx
    up` (the khhf-phones unit, or the demo): it renders into the PBX's run
    directory and runs the Asterisk CLI. The daemons never do: the bridge
    records calls, it does not provision phones. With `every`, a pass every
    that many seconds until SIGTERM; a PBX that is down is skipped (it
    renders every phone when it starts)."""
    from pbxctl.pbx import PbxError
    if every is not None and every <= 0:
        raise PbxError(f"--every {every:g}: give a positive number of seconds, e.g. 10.")
    if every is None:
        added = instance.add_phones(instance.desk_extensions)
        print(f"desk phones added: {', '.join(sorted(added)) or 'none'}")
        return 0
    if not settings.sync_desk_phones:
        print("khhf pbx sync: sync_desk_phones is 0 in the config: new desk phones wait for "
              "`khhf pbx reload`", flush=True)
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"khhf pbx sync: adding new managers' desk phones every {every:g} s", flush=True)
    said = None
    while True:
        try:
            if instance.pid():
                added = instance.add_phones(desk_extensions(settings))
                if added:
                    print(f"desk phones added to the PBX: {', '.join(sorted(added))}",
                          flush=True)
            said = None
        except (PbxError, OSError, subprocess.SubprocessError) as exc:
            if str(exc) != said:  # say it once, not every pass
                said = str(exc)
                print(f"khhf pbx sync: cannot add desk phones ({exc}); trying again",
                      file=sys.stderr, flush=True)
        if stop.wait(every):
            return 0
