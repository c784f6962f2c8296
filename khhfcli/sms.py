"""`khhf sms ...`: the SMS outbox and inbox, for admins and scripts.

    khhf sms inject --from MOBILE TEXT [--by USERNAME]
    khhf sms outbox [--all] [--limit N]
    khhf sms requeue ID [--by USERNAME]

`inject` stores a message as if the phone MOBILE had sent it (the offline
demo, and the twin of the web UI's form): the reply parser takes it from
there like one that came from the SMSC. `outbox` lists what waits to be
sent and what was sent, with status and delivery receipt; numbers masked.
`requeue` sends an 'unknown' or 'failed' message again: for an operator who
checked with the SMSC that the first attempt did not arrive.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the `sms` command to khhf's argument parser."""
    p = subparsers.add_parser("sms", help="the SMS outbox and inbox")
    sub = p.add_subparsers(dest="sms_command", required=True)
    i = sub.add_parser("inject", help="store a message as if sent from a mobile phone")
    i.add_argument("--from", dest="mobile", required=True, help="the sending mobile number")
    i.add_argument("text", nargs="+", help="the message text")
    i.add_argument("--by", help="username recorded in the audit log as having done it")
    i.set_defaults(func=cmd_inject)
    o = sub.add_parser("outbox", help="what waits to be sent and what was sent")
    o.add_argument("--all", action="store_true", help="inbound messages too")
    o.add_argument("--limit", type=int, default=50, help="how many, newest first (default 50)")
    o.set_defaults(func=cmd_outbox)
    r = sub.add_parser("requeue", help="send an unknown or failed message again")
    r.add_argument("id", type=int, help="the message's number (see `khhf sms outbox`)")
    r.add_argument("--by", help="username recorded in the audit log as having done it")
    r.set_defaults(func=cmd_requeue)


def _session(args):
    from khhf import config, db
    settings = config.load(args.config)
    engine = db.open_database(settings)
    return settings, engine, db.session_factory(engine)


def _user(session, username):
    from sqlalchemy import select

    from khhf.models import User
    if not username:
        return None
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise SystemExit(f"khhf: there is no user {username!r} (--by).")
    return user


def cmd_inject(args) -> int:
    from sqlalchemy import select

    from khhf import config, db
    from khhf.models import SmsMessage
    from khhf.phones import mask_phone
    from khhf.services import sms, sms_feedback
    _settings, engine, factory = _session(args)
    try:
        with db.unit_of_work(factory) as session:
            # handled as a reply, as one from the SMSC would be
            row = sms_feedback.receive(session, args.mobile, " ".join(args.text),
                                       user=_user(session, args.by), via="cli",
                                       settings=config.load(args.config))
            print(f"SMS {row.id} from {mask_phone(row.peer_number)} stored as received"
                  + ("" if row.manager_id else " (no manager has this mobile)")
                  + (f"; handled: {row.reply_outcome}" if row.reply_outcome else ""))
            for answer in session.scalars(select(SmsMessage).where(
                    SmsMessage.reply_to_id == row.id, SmsMessage.direction == "out")):
                print(f"answer SMS {answer.id} queued: {answer.body}")
    except sms.SmsError as exc:
        print(f"khhf: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def cmd_outbox(args) -> int:
    from khhf.models import SmsStatus
    from khhf.phones import mask_phone
    from khhf.services import sms
    settings, engine, factory = _session(args)
    try:
        with factory() as session:
            rows = sms.listing(session, None if args.all else "out", limit=args.limit)
    finally:
        engine.dispose()
    if not rows:
        print("no messages")
        return 0
    def when(at):
        return f"{settings.local(at):%Y-%m-%d %H:%M:%S}" if at else "-"
    zone = settings.timezone
    print(f"id\tdir\tnumber\tstatus\treceipt\tattempts\tcreated ({zone})\tsent ({zone})\ttext")
    for r in rows:
        text = r.body if len(r.body) <= 30 else r.body[:29] + "…"
        print(f"{r.id}\t{r.direction}\t{mask_phone(r.peer_number)}\t{r.status}\t"
              f"{r.receipt_status or '-'}\t{r.attempts}\t{when(r.created_at)}\t"
              f"{when(r.sent_at)}\t{text}")
        if r.status in (SmsStatus.UNKNOWN, SmsStatus.FAILED) and r.error:
            print(f"\t{r.error}")
    return 0


def cmd_requeue(args) -> int:
    from khhf import db
    from khhf.services import sms
    _settings, engine, factory = _session(args)
    try:
        with db.unit_of_work(factory) as session:
            sms.requeue(session, args.id, _user(session, args.by))
        print(f"SMS {args.id} queued again")
    except sms.SmsError as exc:
        print(f"khhf: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0
