module github.com/botstate/botstate

go 1.26.8
