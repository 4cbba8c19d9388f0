"""The tamper-evident audit log: an HMAC-SHA256 chain per node, its key outside every guest.

```
record.py   the on-disk format (header, entries, sealed head) and its MACs
chain.py    AuditChain: key, appends (one writer at a time), reads, verify
verify.py   verify(): the first altered, removed, reordered or cut entry, and why
```
Other subsystems record through ``AuditChain.record`` (``Runtime.audit.record``), which matches
``net.peers.AuditSink``. docs/audit.md has the threat model.
"""

from isorun_hostd.audit.chain import AuditChain, load_key, verify_folder
from isorun_hostd.audit.errors import AuditError, AuditKeyError
from isorun_hostd.audit.record import Entry
from isorun_hostd.audit.verify import Finding, Report, verify

__all__ = [
    "AuditChain",
    "AuditError",
    "AuditKeyError",
    "Entry",
    "Finding",
    "Report",
    "load_key",
    "verify",
    "verify_folder",
]
