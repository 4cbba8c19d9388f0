"""Per-sandbox networking: namespaces, the nftables egress policy, the DNS and egress proxies."""
