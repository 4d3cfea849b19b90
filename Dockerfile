# warren: a static binary on an empty base, running as non-root.
#
#   docker build -t warren .
#   docker run -v ./warren.toml:/etc/warren/warren.toml:ro \
#              -v warren-state:/var/lib/warren \
#              -e WARREN_OFFICE_TOKEN \
#              -p 7000:7000/tcp -p 7000:7000/udp warren
#
# Paths in the container (docs/deploy.md has the whole story):
#   /usr/local/bin/warren     the binary (the entrypoint)
#   /etc/warren/warren.toml   the config, mounted read-only
#   /var/lib/warren           the server's state_dir: its self-signed
#                             certificate, on a volume so the fingerprint
#                             clients pin survives new containers
#   /run/secrets/NAME         Docker secrets: token_file = "/run/secrets/NAME"
# Tokens come from the environment (token_env = "NAME", or "${NAME}" in
# any string value) or from a secret file (token_file), never the image.
#
# For a client: docker run ... warren client -c /etc/warren/warren.toml

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Module downloads are their own layer: cached until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The build has no .git (.dockerignore), so "warren version" learns the
# commit from these (Makefile: make docker):
#   docker build --build-arg COMMIT=$(git rev-parse HEAD) \
#                --build-arg DATE=$(git log -1 --format=%cI) -t warren .
ARG VERSION=
ARG COMMIT=
ARG DATE=
# Static (no cgo), no local paths, no symbol table or DWARF. The image's
# only user, "nonroot" (65532), and its group.
RUN pkg=github.com/warren-tunnel/warren/internal/version \
 && CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w ${VERSION:+-X $pkg.Version=$VERSION} ${COMMIT:+-X $pkg.Commit=$COMMIT} ${DATE:+-X $pkg.Date=$DATE}" \
      -o /out/warren ./cmd/warren \
 && mkdir -p /out/state \
 && echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' >/out/passwd \
 && echo 'nonroot:x:65532:' >/out/group

# Nothing but the binary, CA certificates (for [client.tls] without a pin
# or CA file) and the user: no shell, no package manager.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/passwd /etc/passwd
COPY --from=build /out/group /etc/group
COPY --from=build /out/warren /usr/local/bin/warren
# The state directory exists, owned by the user, so a fresh named volume
# mounted there is writable too (Docker copies ownership into it).
COPY --from=build --chown=65532:65532 /out/state /var/lib/warren
USER 65532:65532
# The server's default state directory (the rule: README, Install), as
# systemd's StateDirectory= sets it.
ENV STATE_DIRECTORY=/var/lib/warren
VOLUME ["/var/lib/warren"]
# The tunnel: KCP on UDP and TLS on TCP. Public service ports depend on the
# config: publish them with -p as well.
EXPOSE 7000/tcp 7000/udp
# "warren health -c FILE" exits 0 when the daemon is ready: the admin
# listener FILE configures ([server.admin] or [client.admin] address; add
# --role server|client if FILE has both) answers GET /readyz with 200 (a
# client's session is up), with the admin token of that table if it has
# one. It exits 1 otherwise, including when FILE configures no listener:
# enable one on 127.0.0.1 (loopback inside the container needs no token),
# or run with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/warren", "health", "-c", "/etc/warren/warren.toml"]
ENTRYPOINT ["/usr/local/bin/warren"]
CMD ["server", "-c", "/etc/warren/warren.toml"]
