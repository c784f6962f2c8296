"""Where a redirect may go when the request names the target: only to a
path on this site. The one home for that rule; every view that redirects to
a `next` parameter or back to the Referer goes through here.

Browsers are generous with what they take for a URL: they drop tabs and
newlines anywhere in it, strip leading control characters and spaces, read
a backslash as a slash, and take `//host` as "another host, same scheme".
So `/\t/evil.example` becomes `//evil.example`. A target is accepted only
if it is a plain path: it starts with exactly one '/', and it has no
backslash, no control character and no white space; its path part must
stay so when percent-decoded (`/%2F/evil.example` is refused too).
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote, urlsplit

from flask import request

# percent-decoding more often than this is an attack, not a path of ours
_MAX_DECODES = 3


def _suspicious(text: str) -> bool:
    """Control characters, any white space, a backslash or an invisible format
    character (zero-width space, bidi marks), which browsers may drop."""
    return any(c == "\\" or c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs",
                                                                       "Zl", "Zp")
               for c in text)


def local_path(target: str | None) -> str | None:
    """`target` if it is a path on this site (e.g. "/audit/?page=2"), else None."""
    if not target or len(target) > 2000 or not _plain_path(target):
        return None
    # the path part again, percent-decoded (a proxy or a browser may decode
    # it); the query string cannot name a host, so it may hold "%20"
    path = target.split("?", 1)[0].split("#", 1)[0]
    for _ in range(_MAX_DECODES):
        decoded = unquote(path)
        if decoded == path:
            return target
        if not _plain_path(decoded):
            return None
        path = decoded
    return None


def _plain_path(text: str) -> bool:
    if _suspicious(text) or not text.startswith("/") or text.startswith("//"):
        return False
    parts = urlsplit(text)
    return not (parts.scheme or parts.netloc)


def referrer_path() -> str | None:
    """The page the request came from, as a path, if it is on this site
    (same scheme and host as this request); else None."""
    referrer = request.referrer
    if not referrer:
        return None
    try:
        parts = urlsplit(referrer)
    except ValueError:
        return None
    own = urlsplit(request.host_url)
    if (parts.scheme, parts.netloc) != (own.scheme, own.netloc):
        return None
    return local_path(parts.path + (f"?{parts.query}" if parts.query else ""))
