"""`khhf status`: is the running system healthy? The checks of khhf.health
(the same as GET /healthz) as a table on stdout.

    khhf status            every check; exit 0 when all are ok, 1 otherwise,
                           with what to do for each one that is not
    khhf status --quiet    print only the checks that are not ok (the
                           khhf-health timer: a green minute logs nothing)
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


def cmd_status(args) -> int:
    from khhf import config, health
    settings = config.load(args.config)
    engine = health.health_engine(settings)
    try:
        checks = health.gather(settings, engine)
    finally:
        engine.dispose()
    failing = [c for c in checks if not c.ok]
    shown = failing if args.quiet else checks
    if shown:
        print(table(shown))
    if failing:
        print()
        for check in failing:
            print(f"{check.name}: {check.todo}")
    return EXIT_UNHEALTHY if failing else 0
