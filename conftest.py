"""Settings every test process starts with, before any hostd reads its environment.

A sandbox resolves names through hostd's DNS proxy, whose upstream is the host's resolver unless
configured. Tests must not send anything off this machine, even through a policy that allows a
name by mistake: their sandboxes' queries go to the discard port on loopback, which answers
nothing (the proxy gives the guest SERVFAIL). Tests that serve names run a fake internet and set
their own upstream (tests/framework/fake_internet.py).
"""

import os

os.environ.setdefault("ISORUN_DNS_UPSTREAM", "127.0.0.1:9")
