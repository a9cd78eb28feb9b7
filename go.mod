module github.com/sloproxy/sloproxy

go 1.26.8
