"""`khhf edge ...`: the SIP edge (Kamailio) in front of the PBX nodes, run by root.

    khhf edge up       make Kamailio's tables (once), render its config, start it,
                       hand it the desk phones
    khhf edge down     stop it
    khhf edge status   is it running, which nodes answer its OPTIONS probes, and
                       the nodes as their bridges keep them (khhf.services.nodes)
    khhf edge phones   hand the running edge the desk phones again (new managers)
    khhf edge forget NODE
                       a node retired for good leaves the registry (it stays
                       "lost", and /healthz red, until it is forgotten)

The edge needs PostgreSQL (shared with every node); on SQLite it refuses in
one sentence. Design and commands: docs/cluster.md.
"""

from __future__ import annotations

import sys

from khhf import config as config_mod


def register(subparsers) -> None:
    """Add the `edge` command to khhf's argument parser."""
    p = subparsers.add_parser("edge", help="the SIP edge (Kamailio) in front of the PBX nodes")
    p.add_argument("action", choices=["up", "down", "status", "phones", "forget"])
    p.add_argument("node", nargs="?",
                   help="forget: the name (pbx_name) of a node retired for good")
    p.set_defaults(func=cmd_edge)


def ensure_tables(settings) -> None:
    """Kamailio's tables in the shared PostgreSQL (khhf.cluster), made once."""
    from sqlalchemy.exc import OperationalError

    from khhf import cluster, db
    cluster.require_postgresql(settings, "the SIP edge")
    engine = db.make_engine(settings.database_url)
    try:
        try:
            made = cluster.ensure_kamailio_tables(engine)
        except OperationalError as exc:
            raise db.cannot_connect(exc, engine, settings) from None
        if made:
            print(f"created Kamailio's tables (schema {cluster.KAMAILIO_SCHEMA}) in "
                  f"{engine.url.render_as_string(hide_password=True)}")
    finally:
        engine.dispose()


def node_lines(settings) -> list[str]:
    """The nodes as their bridges keep them in the shared database
    (khhf.services.nodes), or why they cannot be read."""
    from sqlalchemy.exc import SQLAlchemyError

    from khhf import db
    from khhf.services import nodes
    engine = db.make_engine(settings.database_url)
    try:
        with db.session_factory(engine)() as session:
            lines = nodes.describe(session)
    except SQLAlchemyError as exc:
        return [f"PBX nodes: not read from the database ({type(exc).__name__})"]
    finally:
        engine.dispose()
    return ["PBX nodes, as their bridges beat:"] + [f"  {line}" for line in lines or ["none yet"]]


def forget_node(settings, name: str | None) -> int:
    """`khhf edge forget NODE`: the node leaves the registry (and /healthz)."""
    from khhf import cluster, db
    from khhf.services import nodes
    if not name:
        print("khhf edge forget: name the node to forget (its pbx_name, as `khhf edge "
              "status` lists it)", file=sys.stderr)
        return 2
    cluster.require_postgresql(settings, "the SIP edge")
    engine = db.make_engine(settings.database_url)
    try:
        with db.unit_of_work(db.session_factory(engine)) as session:
            node = nodes.forget(session, name)
    except nodes.CannotForget as exc:
        print(f"khhf edge forget: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"PBX node {node.name!r} forgotten; its calls keep their rows. If the edge still "
          f"lists it, take it out of edge_nodes and run `khhf edge up`.")
    return 0


def cmd_edge(args) -> int:
    from pbxctl.edge import Edge

    from .pbx import desk_extensions
    settings = config_mod.load(args.config)
    if args.action == "forget":
        return forget_node(settings, args.node)
    if args.action in ("up", "phones"):
        edge = Edge(settings, desk_extensions(settings))
    else:
        edge = Edge(settings)
    if args.action == "up":
        edge.check()
        ensure_tables(settings)
        pid = edge.up()
        print(f"SIP edge up (pid {pid}) on {settings.edge_host}:{settings.edge_port}; "
              f"{len(edge.desk_extensions)} desk phones; run directory {edge.run_dir}")
    elif args.action == "down":
        was = edge.down()
        print(f"SIP edge {'stopped' if was else 'was not running'}")
    elif args.action == "status":
        print(edge.status())
        print("\n".join(node_lines(settings)))
    elif args.action == "phones":
        edge.load_phones()
        print(f"desk phones handed to the edge: {', '.join(edge.desk_extensions) or 'none'}")
    return 0
