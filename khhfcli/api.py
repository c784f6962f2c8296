"""`khhf api ...`: the integration API's clients and webhook deliveries,
for the server's operator (the admin's API page does the same on the web).

    khhf api clients list
    khhf api clients add NAME --county CODE [--operations OP,OP] [--allow CIDR ...]
                         [--webhook URL] [--rate N]
    khhf api clients revoke NAME
    khhf api deliveries [--retry-failed]

`add` prints what it made, then the new token as the LAST line of its
output (shown only now; only its hash is stored), so a script can take it
with `tail -n 1`. `revoke` takes effect at the client's next request.
Exit status 0 on success; 1 with one line per problem when refused.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the `api` command to khhf's argument parser."""
    from khhf.models import ApiOperation
    p = subparsers.add_parser("api", help="integration API clients and webhook deliveries")
    sub = p.add_subparsers(dest="api_command", required=True)
    c = sub.add_parser("clients", help="list, add or revoke API clients")
    csub = c.add_subparsers(dest="clients_command", required=True)
    csub.add_parser("list", help="every client, revoked ones too").set_defaults(func=cmd_list)
    a = csub.add_parser("add", help="a new client; prints its token last")
    a.add_argument("name")
    a.add_argument("--county", required=True, help="the county code the token is limited to")
    a.add_argument("--operations", default=None,
                   help="comma-separated, of: " + ", ".join(ApiOperation) +
                   " (default: all but recordings:read)")
    a.add_argument("--allow", action="append", default=[], metavar="CIDR",
                   help="a source address or network allowed to use the token (repeat; "
                        "default: any)")
    a.add_argument("--webhook", default="", metavar="URL", help="where events are POSTed")
    a.add_argument("--rate", type=int, default=600, help="requests a minute (default 600)")
    a.set_defaults(func=cmd_add)
    r = csub.add_parser("revoke", help="revoke a client's token at once")
    r.add_argument("name")
    r.set_defaults(func=cmd_revoke)
    d = sub.add_parser("deliveries", help="webhook deliveries per client and status")
    d.add_argument("--retry-failed", action="store_true",
                   help="put the failed deliveries back in the queue")
    d.set_defaults(func=cmd_deliveries)


def _unit(args, action):
    """Run action(session) in one unit of work on the configured database."""
    from khhf import config, db
    settings = config.load(args.config)
    engine = db.open_database(settings)
    try:
        with db.unit_of_work(db.session_factory(engine)) as session:
            return action(session)
    finally:
        engine.dispose()


def cmd_list(args) -> int:
    from khhf.services import api_clients

    def show(session):
        rows = [(c.name, c.county.code, c.operations, c.allowed_addresses or "any",
                 c.webhook_url or "-", str(c.rate_per_minute),
                 f"revoked {c.revoked_at:%Y-%m-%d %H:%M}Z" if c.revoked_at else "active")
                for c in api_clients.all_clients(session)]
        return rows
    rows = _unit(args, show)
    if not rows:
        print("no API clients yet: add one with `khhf api clients add NAME --county CODE`")
    for row in rows:
        print("\t".join(row))
    return 0


def cmd_add(args) -> int:
    from khhf.audit import CLI_ADDRESS
    from khhf.services import ValidationError, api_clients
    operations = [op.strip() for op in args.operations.split(",")] if args.operations else None
    try:
        name, county, ops, token = _unit(args, lambda s: _created(*api_clients.create(
            s, None, CLI_ADDRESS, name=args.name, county_code=args.county,
            operations=operations, allowed_addresses=" ".join(args.allow),
            webhook_url=args.webhook, rate_per_minute=args.rate)))
    except ValidationError as exc:
        for problem in exc.problems:
            print(f"khhf api clients add: {problem.field}: {problem.message % problem.params}",
                  file=sys.stderr)
        return 1
    print(f"API client {name} added for county {county}: {ops}")
    print("its token, shown only now (send it as Authorization: Bearer <token>):")
    print(token)
    return 0


def _created(client, token):
    return client.name, client.county.code, client.operations, token


def cmd_revoke(args) -> int:
    from khhf.audit import CLI_ADDRESS
    from khhf.services import api_clients

    def revoke(session):
        client = api_clients.by_name(session, args.name)
        return None if client is None else api_clients.revoke(session, None, CLI_ADDRESS, client)
    done = _unit(args, revoke)
    if done is None:
        print(f"khhf api clients revoke: there is no API client {args.name}", file=sys.stderr)
        return 1
    print(f"API client {args.name} revoked" + ("" if done else " (it already was)"))
    return 0


def cmd_deliveries(args) -> int:
    from sqlalchemy import select

    from khhf import webhooks
    from khhf.models import WebhookDelivery, WebhookStatus
    from khhf.services import api_clients

    def show(session):
        retried = 0
        if args.retry_failed:
            retried = webhooks.retry(session, session.scalars(select(WebhookDelivery.id).where(
                WebhookDelivery.status == WebhookStatus.FAILED)))
        return retried, [(c.name, webhooks.counts(session, c.id))
                         for c in api_clients.all_clients(session)]
    retried, rows = _unit(args, show)
    for name, counts in rows:
        print(name + "\t" + "\t".join(f"{k} {v}" for k, v in counts.items()))
    if args.retry_failed:
        print(f"{retried} failed deliveries queued again")
    return 0
