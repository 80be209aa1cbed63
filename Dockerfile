# One image for every target: docker-compose.yml passes -target=... per service.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
ENV GOTOOLCHAIN=local CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN GOWORK=off go build -trimpath -ldflags="-s -w" -o /out/gochat ./cmd/gochat

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gochat /gochat
EXPOSE 8080 9100
ENTRYPOINT ["/gochat"]
