# Shortcuts; each target is one plain command you can also run yourself.
#
#   make build     a static ./warren (no cgo, no local paths, no symbols)
#   make install   go install ./cmd/warren (into $(go env GOPATH)/bin)
#   make test      the test suite, as CI runs it
#   make bench     the benchmark suite (bench/; -lossy needs root)
#   make docker    the Docker image, with the commit "warren version" shows
#   make ci        everything CI runs (.ci/run)

GO ?= go

.PHONY: build install test bench docker ci clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o warren ./cmd/warren

install:
	$(GO) install ./cmd/warren

test:
	$(GO) test -race ./...

bench:
	cd bench && $(GO) run .

docker:
	docker build --build-arg COMMIT=$$(git rev-parse HEAD) \
	  --build-arg DATE=$$(git log -1 --format=%cI) -t warren .

ci:
	bash .ci/run

clean:
	rm -f warren
