"""API clients: the operator's own systems (CRM, BOSS) that call /api/v1/.

    client, token = create(session, by, ip, name="crm", county_code="anji")
    client = authenticate(session, token)        # None: unknown or revoked

A token is `khhf_<token id>_<secret>`, shown once. The token id (public,
unique) finds the client's row; the row keeps only SHA-256 of the whole
token, compared in constant time. A token is 32 random bytes, so a fast
hash is enough (a password hash exists to slow down guessing of a weak
secret; nobody guesses 256 bits). Webhooks are signed with a key derived
from the token (HMAC-SHA256(token, "khhf-webhook")), kept beside it: the
client computes the same key from its token (docs/api.md).

A client is limited to one county and to its operations; revoking it
takes effect at the next request (each request reads the row).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from khhf import audit
from khhf.models import ApiClient, ApiOperation, County, User, utcnow

from . import N_, Problems, validated

TOKEN_PREFIX = "khhf"
_TOKEN = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})")
SIGNING_LABEL = b"khhf-webhook"
# a new client may do everything but fetch recordings (those are personal data
# enough that an administrator grants them on purpose)
DEFAULT_OPERATIONS = tuple(op for op in ApiOperation if op != ApiOperation.RECORDINGS_READ)
MAX_RATE = 100_000


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def signing_key(token: str) -> str:
    """The key a client's webhooks are signed with, from its token (hex)."""
    return hmac.new(token.encode(), SIGNING_LABEL, hashlib.sha256).hexdigest()


def parse_addresses(text: str) -> list[str]:
    """'10.0.0.0/8 192.0.2.7' (spaces or commas) as networks; ValueError names the bad one."""
    out = []
    for part in re.split(r"[\s,]+", text or ""):
        if part:
            try:
                out.append(str(ipaddress.ip_network(part, strict=False)))
            except ValueError:
                raise ValueError(part) from None
    return out


def address_allowed(client: ApiClient, address: str) -> bool:
    """Whether a request from `address` may use the client's token."""
    networks = client.allowed_addresses.split()
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n) for n in networks)


def create(session: Session, by: User | None, ip: str, *, name: str, county_code: str,
           operations: list[str] | None = None, allowed_addresses: str = "",
           webhook_url: str = "", rate_per_minute: int = 600) -> tuple[ApiClient, str]:
    """A new client and its token (shown once, never stored); raises
    ValidationError naming each bad field, with nothing added."""
    problems = Problems()
    name = (name or "").strip()
    if not name or len(name) > 64:
        problems.add("name", N_("Give the client a name of 1 to 64 characters."))
    elif session.scalar(select(ApiClient.id).where(ApiClient.name == name)) is not None:
        problems.add("name", N_("An API client named %(value)s exists already; choose "
                                "another name."), value=name)
    county = session.scalar(select(County).where(County.code == (county_code or "").strip()))
    if county is None:
        problems.add("county", N_("There is no county %(code)s; use a county code from the "
                                  "counties page."), code=county_code or "")
    operations = list(DEFAULT_OPERATIONS if operations is None else operations)
    unknown = [op for op in operations if op not in ApiOperation.__members__.values()]
    if unknown or not operations:
        problems.add("operations", N_("Choose the client's operations from: %(known)s."),
                     known=", ".join(ApiOperation))
    try:
        networks = parse_addresses(allowed_addresses)
    except ValueError as bad:
        problems.add("allowed_addresses", N_("%(value)s is not an IP address or network "
                                             "(e.g. 192.0.2.7 or 10.1.0.0/16)."),
                     value=str(bad))
        networks = []
    webhook_url = (webhook_url or "").strip()
    if webhook_url and (not re.fullmatch(r"https?://[^\s/]+(/\S*)?", webhook_url)
                        or len(webhook_url) > 255):
        problems.add("webhook_url", N_("The webhook address must be an http:// or https:// "
                                       "URL of at most 255 characters."))
    if not 0 < rate_per_minute <= MAX_RATE:
        problems.add("rate_per_minute", N_("The rate limit must be between 1 and %(max)s "
                                           "requests a minute."), max=MAX_RATE)
    problems.raise_if_any()
    county = validated(county, "the county")
    token_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    client = ApiClient(name=name, county_id=county.id, token_id=token_id,
                       secret_hash=token_hash(token), signing_key=signing_key(token),
                       operations=" ".join(sorted(set(operations))),
                       allowed_addresses=" ".join(networks), webhook_url=webhook_url,
                       rate_per_minute=rate_per_minute, created_by=by.id if by else None)
    session.add(client)
    session.flush()
    audit.record(session, by, "create", "api_client", client.id,
                 {"fields": {"county": county.code, "operations": client.operations,
                             "webhook": bool(webhook_url)}}, ip, object_name=name)
    return client, token


def revoke(session: Session, by: User | None, ip: str, client: ApiClient,
           now: dt.datetime | None = None) -> bool:
    """Revoke the client's token (its next request is refused); False if it was already."""
    if client.revoked_at is not None:
        return False
    client.revoked_at = now or utcnow()
    audit.record(session, by, "delete", "api_client", client.id, {}, ip, object_name=client.name)
    return True


def authenticate(session: Session, token: str) -> ApiClient | None:
    """The client whose token this is, if not revoked; else None (also for
    a malformed token: the caller answers 401 either way)."""
    match = _TOKEN.fullmatch(token or "")
    if match is None:
        return None
    client = session.scalar(select(ApiClient).where(ApiClient.token_id == match.group(1)))
    # compared even for a revoked client: the answer takes as long either way
    if client is None or not hmac.compare_digest(client.secret_hash, token_hash(token)):
        return None
    return client if client.revoked_at is None else None


def record_call(session: Session, client: ApiClient, operation: str, ip: str,
                status: int, **counts: int) -> None:
    """The audit entry of one API call: the client, the operation, the
    answer's status and counts; never personal data."""
    audit.record(session, None, "api_call", "api_client", client.id,
                 {"operation": operation, "status": status, **counts}, ip,
                 object_name=client.name, username=f"api:{client.name}")


def by_name(session: Session, name: str) -> ApiClient | None:
    return session.scalar(select(ApiClient).where(ApiClient.name == name))


def all_clients(session: Session) -> list[ApiClient]:
    return list(session.scalars(select(ApiClient).order_by(ApiClient.id)))
