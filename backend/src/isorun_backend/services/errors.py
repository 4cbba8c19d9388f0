"""What services refuse or fail with, in the API's words; api/errors.py turns each into HTTP.

Services translate hostd's errors (images, VMs, the agent channel) into this tree, because only
they know what a hostd error means for the caller: an agent ``not_found`` is a missing file to
the files service and a missing process to the processes service.

```
ServiceError(detail)                 code                  (status: api/errors.py)
├── InvalidRequest(field)            invalid_request
├── Unauthorized                     unauthorized
├── SandboxNotFound(sandbox_id)      sandbox_not_found     also another tenant's sandbox
├── SnapshotNotFound(snapshot_id)    snapshot_not_found    also another tenant's snapshot
├── NotFound                         not_found             a file, process or shell in the guest
├── ImageRejected                    image_rejected        the caller's image is the problem
├── ImageUnavailable                 image_unavailable     the registry is the problem
├── SandboxNotRunning(state)         sandbox_not_running
├── Conflict                         conflict
├── QuotaExceeded(limit, ...)        quota_exceeded        the tenant's sandboxes, vCPUs or memory
├── FileError(guest_code)            file_error            the guest refused a file operation
├── SnapshotFailed                   snapshot_failed       a save or restore failed (disk full,
│                                                          corrupt or missing state)
├── Unavailable                      unavailable           this host cannot do it now
└── InternalError                    internal
```
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """A request the services refused or failed; ``detail`` is safe to show the caller."""

    code: ClassVar[str] = "internal"

    def __init__(self, detail: str, *, sandbox_id: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.sandbox_id = sandbox_id


class InvalidRequest(ServiceError):
    code = "invalid_request"

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field


class Unauthorized(ServiceError):
    code = "unauthorized"


class SandboxNotFound(ServiceError):
    code = "sandbox_not_found"

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"no sandbox {sandbox_id!r}", sandbox_id=sandbox_id)


class SnapshotNotFound(ServiceError):
    code = "snapshot_not_found"

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"no snapshot {snapshot_id!r}")
        self.snapshot_id = snapshot_id


class SnapshotFailed(ServiceError):
    code = "snapshot_failed"


class NotFound(ServiceError):
    code = "not_found"


class ImageRejected(ServiceError):
    code = "image_rejected"


class ImageUnavailable(ServiceError):
    code = "image_unavailable"


class SandboxNotRunning(ServiceError):
    code = "sandbox_not_running"

    def __init__(self, sandbox_id: str, state: str, *, what: str = "this") -> None:
        super().__init__(
            f"sandbox {sandbox_id!r} is {state}; {what} needs it running", sandbox_id=sandbox_id
        )
        self.state = state


class Conflict(ServiceError):
    code = "conflict"


class QuotaExceeded(ServiceError):
    """A create that would take the tenant past ``limit``: ``used`` now, ``requested`` more."""

    code = "quota_exceeded"

    def __init__(self, limit: str, *, maximum: int, used: int, requested: int) -> None:
        super().__init__(
            f"quota exceeded: {limit} {used} in use + {requested} requested > {maximum} allowed"
        )
        self.limit = limit
        self.maximum = maximum
        self.used = used
        self.requested = requested


class FileError(ServiceError):
    code = "file_error"

    def __init__(self, detail: str, *, guest_code: str, sandbox_id: str) -> None:
        super().__init__(detail, sandbox_id=sandbox_id)
        self.guest_code = guest_code


class Unavailable(ServiceError):
    code = "unavailable"


class InternalError(ServiceError):
    code = "internal"
