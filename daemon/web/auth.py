"""Who may read the HTTP endpoint, and over what: HTTP authentication and the TLS context.

Follows the Prometheus exporter-toolkit web-config conventions: `basic_auth_users` maps a user name to a bcrypt
hash, `tls_server_config` names PEM files. A bearer token (GUARDIAN_WEB_TOKEN) is the other way in, for
platforms that hand out a config var more easily than a hash (Heroku).

Nothing here keeps a plaintext password: a successful bcrypt check is remembered as an HMAC (keyed with a
random per-process key) of user, password and hash, so the next scrape costs one HMAC instead of a bcrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import ssl
from collections.abc import Mapping
from pathlib import Path

import bcrypt

#: bcrypt's modular crypt format: $2a$/$2b$/$2y$, a two-digit cost, 22 characters of salt and 31 of hash.
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")

REALM = "pg-backup-guardian"

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}


class Authenticator:
    """Checks the `Authorization` header of a request against the configured users and token.

    `users` maps a user name to a bcrypt hash; `token` is a bearer token. With neither, every request passes
    (`enabled` is False). Thread-safe: the cache is a dict whose single-key updates are atomic.
    """

    def __init__(self, users: Mapping[str, str], token: str | None) -> None:
        self._users = {name: h.encode() for name, h in users.items()}
        self._token_digest = hashlib.sha256(token.encode()).digest() if token else None
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}  # user -> HMAC of the last password that passed bcrypt
        self._dummy: bytes | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._users) or self._token_digest is not None

    @property
    def schemes(self) -> list[str]:
        """The accepted schemes, as named in the status document: basic, bearer."""
        return [s for s, on in (("basic", bool(self._users)), ("bearer", self._token_digest is not None)) if on]

    def challenges(self) -> list[tuple[str, str]]:
        """`WWW-Authenticate` headers for a 401, one per accepted scheme."""
        return [("WWW-Authenticate", f'{s.title()} realm="{REALM}"') for s in self.schemes]

    def allows(self, authorization: str | None) -> bool:
        """True when auth is off, or the header carries valid credentials. Never raises on malformed input."""
        if not self.enabled:
            return True
        scheme, _, value = (authorization or "").strip().partition(" ")
        if scheme.lower() == "basic" and self._users:
            return self._basic(value.strip())
        if scheme.lower() == "bearer" and self._token_digest is not None:
            given = hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()
            return hmac.compare_digest(given, self._token_digest)
        return False

    def _basic(self, value: str) -> bool:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        stored = self._users.get(user)
        if stored is None:
            self._burn(password)  # the same bcrypt cost as a known user: timing does not reveal user names
            return False
        seal = hmac.new(self._key, b"\0".join((user.encode(), password.encode(), stored)), "sha256").digest()
        cached = self._verified.get(user)
        if cached is not None and hmac.compare_digest(cached, seal):
            return True
        if not _checkpw(password, stored):
            return False
        self._verified[user] = seal
        return True

    def _burn(self, password: str) -> None:
        if self._dummy is None:
            cost = int(next(iter(self._users.values()))[4:6])
            self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=cost))
        _checkpw(password, self._dummy)


def _checkpw(password: str, stored: bytes) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), stored)
    except ValueError:  # a malformed hash (refused at config load, so only a bug would get here)
        return False


def check_bcrypt_hash(value: str) -> None:
    """Raise ValueError (without echoing the value) unless `value` is a bcrypt hash."""
    if not BCRYPT_HASH.match(value):
        raise ValueError("not a bcrypt hash ($2a$, $2b$ or $2y$ followed by a cost and 53 characters; "
                         "make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)")


def server_tls_context(cert_file: Path, key_file: Path, client_ca_file: Path | None = None,
                       client_auth_type: str = "NoClientCert", min_version: str = "TLS12") -> ssl.SSLContext:
    """A server-side TLS context from PEM files. Raises ValueError naming the file and what is wrong with it."""
    for name, path in (("cert_file", cert_file), ("key_file", key_file), ("client_ca_file", client_ca_file)):
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{name} {path}: cannot read it ({exc.strerror or exc})") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[min_version]
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ValueError(f"cert_file {cert_file} and key_file {key_file}: not a PEM certificate and its matching "
                         f"unencrypted private key ({exc.reason or exc})") from None
    ctx.verify_mode = _CLIENT_AUTH[client_auth_type]
    if client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca_file)
        except ssl.SSLError as exc:
            raise ValueError(f"client_ca_file {client_ca_file}: not a PEM CA certificate ({exc.reason or exc})"
                             ) from None
    return ctx
