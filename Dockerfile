# pg-backup-guardian: slim Python with PostgreSQL's tools, non-root.
# pg_restore reads dumps made by its own major version or older, never newer: a client older than the server
# that made a backup fails every readability check and drill of it. The default is the newest major from the
# PostgreSQL project's apt repository; pin another with --build-arg PG_MAJOR=16 (never older than your server).
# The server package comes too, for initdb and pg_ctl: default drills restore into a throwaway local cluster
# (without it, set drill.scratch_url to a scratch server instead).
FROM python:3.11-slim-bookworm

ARG PG_MAJOR=18
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" "postgresql-${PG_MAJOR}"; \
    apt-get purge -y gnupg curl; apt-get autoremove -y; rm -rf /var/lib/apt/lists/*

RUN useradd --system --create-home --home-dir /var/lib/guardian --uid 10001 guardian
WORKDIR /opt/guardian
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY collectors ./collectors
COPY actions ./actions
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER guardian
WORKDIR /var/lib/guardian
# The container listens on every interface (a port mapping cannot reach 127.0.0.1), and without authentication
# anyone who reaches the port reads /metrics and /api/status (database names, errors): the guardian says so in
# its log, /api/status and status page. Set GUARDIAN_WEB_TOKEN (bearer token) or a web config file
# (GUARDIAN_WEB_CONFIG_FILE: basic_auth_users with bcrypt hashes, tls_server_config) unless the port stays on a
# private network. /healthz stays open for the HEALTHCHECK below, which asks it at the configured address
# (GUARDIAN_LISTEN or listen:, over HTTPS when TLS is on).
ENV GUARDIAN_STATE_DIR=/var/lib/guardian \
    GUARDIAN_PG_BINDIR=/usr/lib/postgresql/${PG_MAJOR}/bin \
    GUARDIAN_LISTEN=0.0.0.0:9729 \
    GUARDIAN_DEMO=false \
    PYTHONUNBUFFERED=1
EXPOSE 9729
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["backup-guardian", "health"]
ENTRYPOINT ["backup-guardian"]
CMD ["run"]
