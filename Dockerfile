# warren: a static binary on a distroless base, running as non-root.
#
#   docker build -t warren .
#   docker run -v ./warren.toml:/etc/warren/warren.toml:ro \
#              -v warren-state:/var/lib/warren \
#              -p 7000:7000/tcp -p 7000:7000/udp warren
#
# The config is read from /etc/warren/warren.toml; the server keeps its
# self-signed certificate in /var/lib/warren (a volume, so the fingerprint
# clients pin survives new containers).

FROM golang:1.25-bookworm AS build
WORKDIR /src
# Module downloads are their own layer: cached until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/warren-tunnel/warren/internal/version.Version=${VERSION}" \
      -o /out/warren ./cmd/warren \
 && mkdir -p /out/state

# distroless/static: CA certificates, /etc/passwd with "nonroot" (65532),
# no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/warren /usr/local/bin/warren
COPY --from=build --chown=65532:65532 /out/state /var/lib/warren
USER 65532:65532
VOLUME ["/var/lib/warren"]
EXPOSE 7000/tcp 7000/udp
ENTRYPOINT ["/usr/local/bin/warren"]
CMD ["server", "-c", "/etc/warren/warren.toml"]
