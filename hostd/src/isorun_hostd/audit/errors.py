"""Errors of the audit subsystem; the first line of each docstring is its message pattern.

```
AuditError
└── AuditKeyError       the key file is missing, malformed or readable by others
```
A chain that fails verification is not an error: ``verify`` reports it as a ``Finding``.
"""

from __future__ import annotations


class AuditError(Exception):
    """Audit log: {detail}."""


class AuditKeyError(AuditError):
    """Audit key {path}: {detail}."""
