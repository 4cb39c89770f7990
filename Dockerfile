# crm-comms container image: built with the Rust toolchain, run on slim Debian as a
# non-root user. docs/deployment.md#container explains the settings.
#
#   docker build -t crm-comms .
#   docker run -v crm-data:/var/lib/crm-comms -p 50051:50051 \
#     -v "$PWD/secrets:/etc/crm-comms:ro" \
#     -e CRM_AUTH_TOKENS_FILE=/etc/crm-comms/tokens \
#     -e CRM_TLS_CERT=/etc/crm-comms/server.pem -e CRM_TLS_KEY=/etc/crm-comms/server.key crm-comms

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole tree (see .dockerignore): Cargo.toml names the bench and test targets too.
COPY . .
# tools/docs/check.sh builds with the same command, in debug.
RUN cargo build --locked --release --bin crm-comms

FROM debian:bookworm-slim
# A system user with a fixed id (10001), so volume permissions are predictable.
RUN groupadd --system --gid 10001 crm \
 && useradd --system --uid 10001 --gid crm --home-dir /var/lib/crm-comms --no-create-home crm \
 && install -d -o crm -g crm -m 0750 /var/lib/crm-comms
COPY --from=build /src/target/release/crm-comms /usr/local/bin/crm-comms

USER 10001:10001
WORKDIR /var/lib/crm-comms
# SQLite's database, WAL and shared-memory files live in the volume; with MySQL
# (DATABASE_URL=mysql://...) the volume stays empty.
VOLUME ["/var/lib/crm-comms"]
ENV CRM_LISTEN=0.0.0.0:50051 \
    DATABASE_URL=sqlite:///var/lib/crm-comms/crm.db \
    CRM_METRICS_LISTEN=0.0.0.0:9100 \
    CRM_LOG_FORMAT=json
EXPOSE 50051 9100
# SIGTERM drains: NOT_SERVING, in-flight calls get --shutdown-grace-secs (10 s), exit 0.
STOPSIGNAL SIGTERM
# No health probe binary ships in the image: Kubernetes probes gRPC health natively
# (deploy/kubernetes/crm-comms.yaml); elsewhere probe port 50051 from outside.
ENTRYPOINT ["/usr/local/bin/crm-comms"]
CMD ["serve"]
