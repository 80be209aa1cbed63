module github.com/gochat/gochat/bench

go 1.26.8

require (
	github.com/golang-jwt/jwt/v5 v5.3.1
	github.com/gorilla/websocket v1.5.3
	golang.org/x/sys v0.50.0
)
