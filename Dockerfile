# senderguard: milter sidecar image.
# Build: docker build -t senderguard .        (podman build works the same)
# Run:   docker run -p 8896:8896 -p 9896:9896 senderguard
#        docker run ... senderguard -dry-run  (extra flags add to the defaults
#        below; a later flag wins, so -listen ... overrides them too)
# Air-gapped sites: --build-arg GO_IMAGE=mirror/golang:1.26-bookworm
#                   --build-arg BASE_IMAGE=mirror/static:nonroot
# Pin by digest in production, e.g.
#   --build-arg BASE_IMAGE=gcr.io/distroless/static-debian12@sha256:<digest>
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
# A patched copy of the milter library, used through a replace directive
# (third_party/go-milter/README.md).
COPY third_party ./third_party
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/senderguard ./cmd/senderguard

FROM ${BASE_IMAGE}
COPY --from=build /out/senderguard /usr/local/bin/senderguard
COPY deploy/senderguard.yaml /etc/senderguard/senderguard.yaml
# Numeric, so that Kubernetes' runAsNonRoot can verify it (65532 is
# distroless's nonroot).
USER 65532:65532
EXPOSE 8896 9896
# The listen addresses are part of the entrypoint: arguments given to
# "docker run IMAGE ..." add to them instead of replacing them.
ENTRYPOINT ["/usr/local/bin/senderguard", "serve", "-config", "/etc/senderguard/senderguard.yaml", "-listen", "inet:0.0.0.0:8896", "-metrics-listen", "0.0.0.0:9896", "-admin", ""]
