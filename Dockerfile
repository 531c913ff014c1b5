# senderguard: milter sidecar image.
# Build: docker build -t senderguard .
# Run:   docker run -p 8896:8896 -p 9896:9896 senderguard \
#          -listen inet:0.0.0.0:8896 -metrics-listen 0.0.0.0:9896
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/senderguard ./cmd/senderguard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/senderguard /usr/local/bin/senderguard
COPY deploy/senderguard.yaml /etc/senderguard/senderguard.yaml
USER nonroot:nonroot
EXPOSE 8896 9896
ENTRYPOINT ["/usr/local/bin/senderguard", "serve", "-config", "/etc/senderguard/senderguard.yaml"]
CMD ["-listen", "inet:0.0.0.0:8896", "-metrics-listen", "0.0.0.0:9896"]
