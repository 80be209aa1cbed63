module github.com/gochat/gochat/bench

go 1.26.8
