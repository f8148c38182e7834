"""The configuration of the HTTP endpoint (/metrics, the status page and API): timeouts, worker pool, TLS
and authentication, inline or from an exporter-toolkit web config file.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from daemon.config.fields import Duration, Secret, StrictModel, dotted_path
from daemon.config.file import read_config_file
from daemon.web.auth import check_bcrypt_hash, server_tls_context


class TlsServerConfig(StrictModel):
    """TLS for the HTTP endpoint (the exporter-toolkit's `tls_server_config`); files are read once at start."""

    cert_file: Path = Field(description="PEM certificate (chain) the endpoint presents.",
                            examples=["/etc/guardian/tls.crt"])
    key_file: Path = Field(description="PEM private key of cert_file (unencrypted).",
                           examples=["/etc/guardian/tls.key"])
    client_ca_file: Path | None = Field(None, description="PEM CA certificates that sign client certificates "
                                        "(mutual TLS; needs a verifying client_auth_type).",
                                        examples=["/etc/guardian/clients-ca.crt"])
    client_auth_type: Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] = Field(
        "NoClientCert", description="Client certificate policy, as the exporter-toolkit names it.",
        examples=["RequireAndVerifyClientCert"])
    min_version: Literal["TLS12", "TLS13"] = Field("TLS12", description="Oldest TLS version accepted.",
                                                  examples=["TLS12"])

    @model_validator(mode="after")
    def _loadable(self) -> TlsServerConfig:
        if (self.client_ca_file is None) != (self.client_auth_type == "NoClientCert"):
            raise ValueError("client_ca_file and a verifying client_auth_type (VerifyClientCertIfGiven, "
                             "RequireAndVerifyClientCert) go together")
        server_tls_context(self.cert_file, self.key_file, self.client_ca_file, self.client_auth_type,
                           self.min_version)
        return self


class WebConfig(StrictModel):
    """The HTTP endpoint's defences: timeouts, a bounded worker pool, optional TLS and authentication (basic
    auth with bcrypt hashes or a bearer token). /healthz stays open for container health checks."""

    config_file: Path | None = Field(
        None, description="An exporter-toolkit web config file (tls_server_config, basic_auth_users), read once at "
        "start, e.g. /etc/guardian/web-config.yml; the same keys may be given inline below instead.",
        examples=[None])
    tls_server_config: TlsServerConfig | None = Field(None, description="Serve HTTPS instead of HTTP.",
                                                      examples=[None])  # shown commented out: it needs real files
    basic_auth_users: dict[str, Secret] = Field(
        default_factory=dict, description="User name -> bcrypt hash of the password (htpasswd -nBC 10).",
        examples=[{"prometheus": "$2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze"}])
    bearer_token: Secret | None = Field(
        None, description="Accept `Authorization: Bearer <token>` (better: the GUARDIAN_WEB_TOKEN variable).",
        examples=["${GUARDIAN_WEB_TOKEN}"])
    header_timeout: Duration = Field(
        timedelta(seconds=10), description="A connection must deliver a whole request head (and finish its TLS "
        "handshake) within this time, however slowly it trickles in.", examples=["10s"])
    idle_timeout: Duration = Field(timedelta(seconds=60), description="Close a keep-alive connection idle this "
                                   "long.", examples=["60s"])
    workers: int = Field(4, ge=1, le=64, description="Threads that answer requests (slow clients hold none: "
                         "requests are read and responses written asynchronously).", examples=[4])
    max_connections: int = Field(100, ge=1, le=10000, description="Open connections beyond this wait in the "
                                 "listen backlog.", examples=[100])

    @model_validator(mode="before")
    @classmethod
    def _read_config_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("config_file"):
            return data
        path = Path(str(data["config_file"]))
        problems: list[str] = []
        doc = read_config_file(path, problems)  # the web config file is read as safely as the main one
        if problems:
            raise ValueError(f"config_file {problems[0]}")
        unknown = sorted(set(doc) - {"tls_server_config", "basic_auth_users"})
        if unknown:
            raise ValueError(f"config_file {path}: unsupported key(s) {', '.join(map(str, unknown))} "
                             "(supported: tls_server_config, basic_auth_users)")
        both = sorted(k for k in doc if k in data)
        if both:
            raise ValueError(f"{', '.join(both)}: given both inline and in config_file {path}; keep one")
        try:
            cls.model_validate(doc)  # first on its own, so that a problem names the file it is in
        except ValidationError as exc:
            raise ValueError("; ".join(f"config_file {path}: {dotted_path(tuple(map(str, e['loc'])))}: "
                                       f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
        return {**data, **doc}

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in users.items():
            try:
                check_bcrypt_hash(value.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"user {name!r}: {exc}") from None
        return users

    @field_validator("bearer_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return token
