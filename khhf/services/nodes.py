"""The PBX nodes of a cluster behind the SIP edge (docs/cluster.md): which
are up, which takes the next click-to-dial, and what becomes of the calls
of a node that was lost.

- Each node's AMI bridge keeps the node's row in `pbx_nodes` (`beat`, every
  BEAT_SECONDS) while it is logged in to its Asterisk: where its command
  channel listens, how many calls the PBX carries, whether it takes new
  ones. A bridge that is gone, or whose Asterisk is gone, stops beating.
- Click-to-dial asks `dial_targets`: the live nodes (a beat within
  LOST_AFTER, accepting calls), the least loaded first. One node without an
  edge: the web's own bridge, exactly as before the cluster.
- A node whose last beat is older than LOST_AFTER is lost: each bridge's
  beat also runs `sweep_lost`, and the first to see it claims the node
  with one conditional UPDATE (lost_at IS NULL), so its calls are closed
  once across the cluster, whoever runs it and however many at once: calls
  as 'lost' (khhf.calls.store.record, itself idempotent; hotline rows
  too). Requested calls a node's bridge refused unsent never wait for
  this: click-to-dial hands them to the next live node at once
  (khhf.bridge_client.dial_across) or refuses them. When the node
  comes back, its bridge's CEL reconciler completes those rows from what
  Asterisk wrote (the fold prefers a recorded end to 'lost').
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from khhf import audit
from khhf.calls import events, store
from khhf.calls.states import FINAL_STATES, CallOutcome, CallState
from khhf.config import Settings
from khhf.models import Call, PbxNode, utcnow

log = logging.getLogger(__name__)

# how often a bridge beats (and looks for lost nodes)
BEAT_SECONDS = 2.0
# a node whose last beat is older than this is lost: no new call goes there,
# and its open calls are closed (within LOST_AFTER + BEAT_SECONDS of its last beat)
LOST_AFTER = dt.timedelta(seconds=10)


def in_cluster(settings: Settings) -> bool:
    """Whether this machine is part of a cluster behind the SIP edge."""
    return bool(settings.edge_host)


def beat(session: Session, settings: Settings, live_calls: int, accepting: bool,
         now: dt.datetime | None = None) -> PbxNode:
    """This node's beat (its bridge is logged in to its Asterisk): its row
    made or refreshed; a node that was lost, or silent for LOST_AFTER,
    joins again."""
    now = now or utcnow()
    node = session.get(PbxNode, settings.pbx_name)
    if node is None:
        node = PbxNode(name=settings.pbx_name, joined_at=now, heartbeat_at=now)
        session.add(node)
    elif node.lost_at is not None or node.heartbeat_at < now - LOST_AFTER:
        log.info("PBX node %s joins the cluster again", node.name)
        node.joined_at, node.lost_at, node.lost_by = now, None, None
    node.bridge_host, node.bridge_port = settings.bridge_host, settings.bridge_port
    node.sip_host, node.sip_port = settings.sip_host, settings.sip_port
    node.heartbeat_at, node.live_calls, node.accepting = now, live_calls, accepting
    return node


def live_nodes(session: Session, now: dt.datetime | None = None) -> list[tuple[PbxNode, int]]:
    """[(node, load)] of the nodes that take calls now, the least loaded
    first: its calls at its last beat plus the calls requested on it since
    (so a burst of clicks between two beats is spread too)."""
    now = now or utcnow()
    since = and_(Call.pbx_node == PbxNode.name, Call.direction == "outbound",
                 Call.requested_at >= PbxNode.heartbeat_at)
    rows = session.execute(
        select(PbxNode, func.count(Call.id)).outerjoin(Call, since)
        .where(_beating(now), PbxNode.accepting)
        .group_by(PbxNode.name)).all()
    ranked = [(node, node.live_calls + requested) for node, requested in rows]
    return sorted(ranked, key=lambda pair: (pair[1], pair[0].name))


def dial_targets(session: Session, settings: Settings,
                 now: dt.datetime | None = None) -> list[Settings]:
    """Where click-to-dial sends a call, best first, as settings naming each
    node and its bridge: one node without an edge, the web's own bridge;
    behind an edge, the live nodes by load ([] when none is up)."""
    if not in_cluster(settings):
        return [settings]
    return [_target(settings, node) for node, _ in live_nodes(session, now)]


def _target(settings: Settings, node: PbxNode) -> Settings:
    """`settings` naming `node` and its bridge's command channel."""
    return dataclasses.replace(settings, pbx_name=node.name, bridge_host=node.bridge_host,
                               bridge_port=node.bridge_port)


def _beating(now: dt.datetime):
    return and_(PbxNode.heartbeat_at >= now - LOST_AFTER, PbxNode.lost_at.is_(None))


def watch_targets(session: Session, settings: Settings,
                  now: dt.datetime | None = None) -> list[Settings]:
    """Whose channels the live view shows: one node without an edge, the
    web's own bridge; behind an edge, every node that beats (also one
    shutting down gracefully: its calls go on), by name."""
    if not in_cluster(settings):
        return [settings]
    now = now or utcnow()
    return [_target(settings, node) for node in session.scalars(
        select(PbxNode).where(_beating(now)).order_by(PbxNode.name))]


def node_target(session: Session, settings: Settings, name: str,
                now: dt.datetime | None = None) -> Settings | None:
    """The bridge of node `name`, for what only that node can do (listen in
    on its call, hand over its recording): one node without an edge, the
    web's own bridge; behind an edge, the node's registered bridge, or None
    when the node does not beat (lost, silent, or never seen)."""
    if not in_cluster(settings):
        return settings
    now = now or utcnow()
    node = session.scalar(select(PbxNode).where(PbxNode.name == name, _beating(now)))
    return _target(settings, node) if node is not None else None


def sweep_lost(session: Session, sweeper: str, now: dt.datetime | None = None) -> dict[str, int]:
    """Claim each node lost since its last beat (older than LOST_AFTER) and
    close its open calls; {node: calls closed} of the nodes this caller
    claimed. The claim is one conditional UPDATE: of several sweepers, one
    wins it and the others skip the node."""
    now = now or utcnow()
    bound = now - LOST_AFTER
    closed = {}
    for name in session.scalars(select(PbxNode.name).where(
            PbxNode.heartbeat_at < bound, PbxNode.lost_at.is_(None))).all():
        claimed = session.scalar(
            update(PbxNode).where(PbxNode.name == name, PbxNode.heartbeat_at < bound,
                                  PbxNode.lost_at.is_(None))
            .values(lost_at=now, lost_by=sweeper).returning(PbxNode.name)
            .execution_options(synchronize_session=False))
        if claimed is not None:
            node = session.get_one(PbxNode, name, populate_existing=True)
            closed[name] = close_calls(session, node)
            log.warning("PBX node %s lost (no beat since %s): %d open call(s) closed", name,
                        node.heartbeat_at.isoformat(timespec="seconds"), closed[name])
    return closed


def close_calls(session: Session, node: PbxNode) -> int:
    """Close the open calls of a lost node as lost, at its last beat (or
    later, when a call was requested after it or an event shows it alive
    later). A call still 'requested' is lost too, not "not placed": the
    node may have placed it after its bridge's last word. An outbound
    call's 'lost' is one of its events (the fold prefers a recorded end,
    so the node's CEL completes it when it returns); a hotline row is
    closed as the hotline's stale sweep does (its own end, if it still
    comes, completes it). Returns how many."""
    calls = session.scalars(select(Call).where(
        Call.pbx_node == node.name, Call.state.not_in(FINAL_STATES))).all()
    for call in calls:
        at = max(node.heartbeat_at, call.requested_at)
        if call.direction == "inbound":
            call.state, call.end_at, call.outcome = CallState.ENDED, at, CallOutcome.LOST
        else:
            store.record(session, call, events.LOST, at)
    return len(calls)


def lost_nodes(session: Session) -> list[PbxNode]:
    """The nodes that were lost and have not come back."""
    return list(session.scalars(select(PbxNode).where(PbxNode.lost_at.is_not(None))
                                .order_by(PbxNode.name)))


class CannotForget(ValueError):
    """A node `forget` must not remove; the message says why and what to do."""


def forget(session: Session, name: str, now: dt.datetime | None = None) -> PbxNode:
    """Remove a retired node from the registry (`khhf edge forget`): a node
    taken out of the cluster for good stays "lost" and keeps /healthz red
    until it is forgotten. Only a node silent for longer than LOST_AFTER may
    go; its open calls are closed first, as a lost node's are (its calls
    keep their rows and their node's name). Audited; the caller commits."""
    now = now or utcnow()
    node = session.get(PbxNode, name, with_for_update=True)
    if node is None:
        known = ", ".join(session.scalars(select(PbxNode.name).order_by(PbxNode.name))) or "none"
        raise CannotForget(f"no PBX node is named {name!r} (known: {known}); "
                           f"`khhf edge status` lists them")
    if node.heartbeat_at >= now - LOST_AFTER:
        silent = round((now - node.heartbeat_at).total_seconds())
        raise CannotForget(
            f"PBX node {name!r} beat {silent} s ago: it is still running; stop it first "
            f"(`khhf pbx down` and `systemctl stop khhf-bridge` on that machine), then forget "
            f"it after {LOST_AFTER.seconds} s")
    closed = close_calls(session, node) if node.lost_at is None else 0
    audit.record(session, None, "delete", "pbx_node", name, {
        "last_beat": node.heartbeat_at.isoformat(timespec="seconds"),
        "calls_closed": closed}, audit.CLI_ADDRESS, object_name=name)
    session.delete(node)
    log.warning("PBX node %s forgotten (last beat %s); %d open call(s) closed", name,
                node.heartbeat_at.isoformat(timespec="seconds"), closed)
    return node


def describe(session: Session, now: dt.datetime | None = None,
             addresses: bool = True) -> list[str]:
    """One line per node, for `khhf status` (without `addresses`: /healthz is
    public) and `khhf edge status`: up (its calls), not taking calls,
    silent, or lost (when, and who closed its calls)."""
    now = now or utcnow()
    lines = []
    for node in session.scalars(select(PbxNode).order_by(PbxNode.name)):
        where = (f" (SIP {node.sip_host}:{node.sip_port}, bridge {node.bridge_host}:"
                 f"{node.bridge_port})" if addresses else "")
        silent = round((now - node.heartbeat_at).total_seconds())
        if node.lost_at is not None:
            state = (f"lost (no beat for {silent} s; its calls closed by {node.lost_by} at "
                     f"{node.lost_at.isoformat(timespec='seconds')} UTC)")
        elif node.heartbeat_at < now - LOST_AFTER:
            state = f"silent for {silent} s (lost once another node sees it)"
        elif not node.accepting:
            state = f"up, shutting down gracefully: no new calls ({node.live_calls} calls)"
        else:
            state = f"up ({node.live_calls} calls)"
        lines.append(f"{node.name}{where}: {state}")
    return lines
