"""hostd's egress proxies: the DNS proxy, the egress gateway and its credential proxy."""
