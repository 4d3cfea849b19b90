# warren: a static binary on a distroless base, running as non-root.
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

FROM golang:1.25-bookworm AS build
WORKDIR /src
# Module downloads are their own layer: cached until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (no cgo), no local paths, no symbol table or DWARF.
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/warren-tunnel/warren/internal/version.Version=${VERSION}" \
      -o /out/warren ./cmd/warren \
 && mkdir -p /out/state

# distroless/static: CA certificates, /etc/passwd with "nonroot" (65532),
# no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/warren /usr/local/bin/warren
# The state directory exists, owned by the user, so a fresh named volume
# mounted there is writable too (Docker copies ownership into it).
COPY --from=build --chown=65532:65532 /out/state /var/lib/warren
USER 65532:65532
VOLUME ["/var/lib/warren"]
# The tunnel: KCP on UDP and TLS on TCP. Public service ports depend on the
# config: publish them with -p as well.
EXPOSE 7000/tcp 7000/udp
# "warren health -c FILE" exits 0 when the admin listener FILE configures
# ([server.admin] or [client.admin] address; add --role server|client if
# FILE has both) answers GET /healthz with 200, and 1 otherwise, including
# when FILE configures none: enable one on 127.0.0.1 (loopback inside the
# container needs no token), or run with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/warren", "health", "-c", "/etc/warren/warren.toml"]
ENTRYPOINT ["/usr/local/bin/warren"]
CMD ["server", "-c", "/etc/warren/warren.toml"]
