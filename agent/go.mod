module github.com/isorun/isorun/agent

go 1.22

require (
	github.com/vishvananda/netlink v1.3.1
	golang.org/x/sys v0.30.0
)

require github.com/vishvananda/netns v0.0.5 // indirect
