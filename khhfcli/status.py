"""`khhf status`: is the running system healthy? The checks of khhf.health
(the same as GET /healthz) as a table on stdout.

    khhf status            every check; exit 0 when all are ok, 1 otherwise,
                           with what to do for each one that is not
    khhf status --quiet    print only the checks that are not ok (the
                           khhf-health timer: a green minute logs nothing)

On the SIP edge's machine (edge_nodes set) it also checks the edge: is
Kamailio running, and which PBX nodes answer its OPTIONS probes. That
check is here, not in khhf.health (/healthz): it asks Kamailio through
PBX control (pbxctl.edge), which the domain does not import.
"""

from __future__ import annotations

EXIT_UNHEALTHY = 1


def register(subparsers) -> None:
    """Add the `status` command to khhf's argument parser."""
    p = subparsers.add_parser("status", help="health of the daemons, PBX, SMS, jobs, database "
                                             "and disk (exit 1 if anything is wrong)")
    p.add_argument("--quiet", action="store_true",
                   help="print only what is wrong (nothing when all is well)")
    p.set_defaults(func=cmd_status)


def table(checks) -> str:
    """The checks as aligned lines: name, ok/FAIL, detail."""
    width = max(len(c.name) for c in checks)
    return "\n".join(f"{c.name:<{width}}  {'ok' if c.ok else 'FAIL':<4}  {c.detail}"
                     for c in checks)


def check_edge(settings):
    """The SIP edge: running, and every node answering its probes."""
    from khhf.health import Check
    from pbxctl.edge import Edge
    edge = Edge(settings)
    pid = edge.pid()
    if not pid:
        return Check("edge", False, "not running",
                     "start it: `systemctl start khhf-edge` (or `khhf edge up`); see "
                     f"{edge.log_file}")
    nodes = edge.nodes()
    if not nodes:
        return Check("edge", False, f"Kamailio running (pid {pid}), but its control socket "
                     "does not answer", "restart it: `systemctl restart khhf-edge`")
    down = [uri for uri, state in nodes if state != "up"]
    detail = (f"Kamailio running (pid {pid}); {len(nodes) - len(down)} of {len(nodes)} PBX "
              f"nodes answer: " + ", ".join(f"{uri} {state}" for uri, state in nodes))
    if down:
        return Check("edge", False, detail,
                     f"{', '.join(down)}: start the PBX there or check the network (`khhf pbx "
                     "status` on that node); meanwhile the edge sends calls to the others")
    return Check("edge", True, detail)


def cmd_status(args) -> int:
    from khhf import config, health
    settings = config.load(args.config)
    engine = health.health_engine(settings)
    try:
        checks = health.gather(settings, engine)
    finally:
        engine.dispose()
    if settings.edge_nodes.strip():
        checks.insert(1 + next(i for i, c in enumerate(checks) if c.name == "pbx"),
                      check_edge(settings))
    failing = [c for c in checks if not c.ok]
    shown = failing if args.quiet else checks
    if shown:
        print(table(shown))
    if failing:
        print()
        for check in failing:
            print(f"{check.name}: {check.todo}")
    return EXIT_UNHEALTHY if failing else 0
