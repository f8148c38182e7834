# pg-backup-guardian: slim Python with the PostgreSQL client tools (pg_dump, pg_restore), non-root.
# Build with a client major version matching (or newer than) your server: --build-arg PG_MAJOR=16
FROM python:3.11-slim-bookworm

ARG PG_MAJOR=15
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    if [ "$PG_MAJOR" != "15" ]; then \
      install -d /usr/share/postgresql-common/pgdg; \
      curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
      echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" > /etc/apt/sources.list.d/pgdg.list; \
      apt-get update; \
    fi; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}"; \
    apt-get purge -y gnupg; apt-get autoremove -y; rm -rf /var/lib/apt/lists/*

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
# private network. /healthz stays open for the HEALTHCHECK below (with TLS on, make it curl -k https://...).
ENV GUARDIAN_STATE_DIR=/var/lib/guardian \
    GUARDIAN_LISTEN=0.0.0.0:9729 \
    GUARDIAN_DEMO=false \
    PYTHONUNBUFFERED=1
EXPOSE 9729
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9729/healthz || exit 1
ENTRYPOINT ["backup-guardian"]
CMD ["run"]
