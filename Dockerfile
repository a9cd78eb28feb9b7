# The proxy's image: a static binary on an empty image.
#
# With registry access (docker compose up does this):
#   docker build -t sloproxy/sloproxy .
# Without one, build the binary on the host and use the second stage alone:
#   CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /tmp/ctx/sloproxy ./cmd/sloproxy
#   printf 'FROM scratch\nCOPY sloproxy /sloproxy\nENTRYPOINT ["/sloproxy"]\n' > /tmp/ctx/Dockerfile
#   docker build -t sloproxy/sloproxy /tmp/ctx
ARG GO_IMAGE=golang:1.26
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /sloproxy ./cmd/sloproxy

FROM scratch
COPY --from=build /sloproxy /sloproxy
USER 65534:65534
EXPOSE 1337 1338
ENTRYPOINT ["/sloproxy"]
CMD ["serve", "--config", "/etc/sloproxy/sloproxy.yaml"]
