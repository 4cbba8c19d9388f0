module github.com/isorun/isorun/agent

go 1.22
