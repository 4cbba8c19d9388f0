"""The URL edge: a sandbox's port at ``https://{port}-{sandbox}.{domain}/`` (spec/api.md "URLs").

```
tokens.py      UrlSigner: HMAC tokens bound to (sandbox, port), expiring, public or private
addresses.py   {port}-{sandbox}.{domain} <-> PortAddress
app.py         EdgeApp (ASGI): host, token, key, wake, count, then a proxy
http_proxy.py  any HTTP request as HTTP/1.1 to the guest, streaming both ways (h11)
ws_proxy.py    WebSocket handshake passed through, then messages both ways (wsproto)
pages.py       the edge's own answers: 401/403/404/410/502/503
certs.py       the self-signed certificate for *.{domain}, when none is configured
server.py      edge_serving(): hypercorn, TLS + HTTP/2 on TCP, HTTP/3 on UDP
```

The guest port is reached through the node (Node.connect_port: the agent's connect op), never
through the guest's network, so a URL works whatever the sandbox's egress policy.
"""
