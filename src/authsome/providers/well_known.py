"""Where an OAuth issuer publishes its metadata: the one place these URLs are built.

RFC 8414 section 3.1 inserts the well-known path between the host and the issuer's path
(``https://host/.well-known/oauth-authorization-server/tenant``); OpenID Connect Discovery 1.0 section 4 appends it
(``https://host/tenant/.well-known/openid-configuration``). A trailing slash on the issuer changes neither.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

OAUTH_AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"
OPENID_CONFIGURATION = "/.well-known/openid-configuration"


def well_known_urls(issuer: str) -> tuple[str, str]:
    """The RFC 8414 and the OpenID discovery URL of ``issuer``, in the order they are tried."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, OAUTH_AUTHORIZATION_SERVER + path, "", ""))
    openid = urlunsplit((parts.scheme, parts.netloc, path + OPENID_CONFIGURATION, "", ""))
    return rfc8414, openid
