"""Errors raised while resolving, fetching, unpacking and caching OCI images.

Every error names the image reference the caller gave and the problem. The first line of each
class docstring is its message pattern; the fields it names are also attributes of the error.

```
ImageError(reference)
├── ImageReferenceError               the text is not a usable reference
│   ├── InvalidReference
│   └── FloatingReference             latest / lts / stable / no tag, refused at create
├── RegistryError(registry)           talking to the registry failed
│   ├── RegistryUnreachable           connect / read failure or timeout (retryable)
│   ├── InsecureRegistry              plain HTTP to a non-loopback host (or to loopback for a
│   │                                 registry that is not); refused before any I/O
│   ├── AuthenticationFailed          401: missing or bad credentials, token flow failed
│   ├── ManifestUnknown               404 on the manifest: wrong tag or digest
│   ├── BlobUnknown                   404 on a blob the manifest names
│   └── RegistryProtocolError         an answer we cannot use (status, JSON, headers)
├── VerificationError                 content does not match what was asked for
│   ├── DigestMismatch                sha256 of a manifest or blob != its digest
│   └── ContentTooLarge               more bytes than the descriptor or cap allows
├── UnsupportedMediaType
├── PlatformNotFound                  an index without linux/amd64
├── LayerError(layer)                 a layer cannot be applied safely
│   ├── CorruptLayer                  bad compression or tar, or diff_id mismatch
│   ├── UnsafePath                    an entry would land outside the image root
│   ├── SpecialFile                   device node, fifo or GNU sparse file
│   ├── LayerTooLarge                 the image unpacks past a byte or entry limit
│   └── UnpackFailed                  the scratch filesystem refused a write (full, ...)
└── DiskBuildError                    mkfs.erofs failed
```

`retryable` is a class attribute, not a second tree: only unreachable registries are worth
retrying unchanged.
"""

from __future__ import annotations

from typing import ClassVar


class ImageError(Exception):
    """image {reference}: {detail}"""

    retryable: ClassVar[bool] = False
    reference: str

    def __init__(self, reference: str, **fields: object) -> None:
        self.reference = reference
        for name, value in fields.items():
            setattr(self, name, value)
        pattern = (type(self).__doc__ or "image {reference}").strip().splitlines()[0]
        super().__init__(pattern.format(reference=reference, **fields))


class ImageReferenceError(ImageError):
    """image {reference!r}: {detail}"""

    detail: str


class InvalidReference(ImageReferenceError):
    """image {reference!r} is not a valid reference: {detail}"""


class FloatingReference(ImageReferenceError):
    """image {reference!r} {detail}: pin a version tag or a digest, e.g. {example}"""

    example: str


class RegistryError(ImageError):
    """image {reference}: registry {registry}: {detail}"""

    registry: str
    detail: str


class RegistryUnreachable(RegistryError):
    """image {reference}: registry {registry} is unreachable: {detail}"""

    retryable = True


class InsecureRegistry(RegistryError):
    """image {reference}: refusing plain HTTP to {url}: {detail}"""

    url: str


class AuthenticationFailed(RegistryError):
    """image {reference}: registry {registry} refused access: {detail}"""


class ManifestUnknown(RegistryError):
    """image {reference}: manifest {target} not found on {registry} (wrong tag or digest?)"""

    target: str


class BlobUnknown(RegistryError):
    """image {reference}: blob {digest} not found on {registry}"""

    digest: str


class RegistryProtocolError(RegistryError):
    """image {reference}: registry {registry} answered badly: {detail}"""


class VerificationError(ImageError):
    """image {reference}: {detail}"""


class DigestMismatch(VerificationError):
    """image {reference}: {what} digest mismatch: expected {expected}, got {actual}"""

    what: str
    expected: str
    actual: str


class ContentTooLarge(VerificationError):
    """image {reference}: {what} is larger than {limit_bytes} bytes"""

    what: str
    limit_bytes: int


class UnsupportedMediaType(ImageError):
    """image {reference}: unsupported media type {media_type!r} for {what}"""

    media_type: str
    what: str


class PlatformNotFound(ImageError):
    """image {reference}: no linux/amd64 image in the index (available: {available})"""

    available: str


class LayerError(ImageError):
    """image {reference}: layer {layer}: {detail}"""

    layer: str
    detail: str


class CorruptLayer(LayerError):
    """image {reference}: layer {layer} is corrupt: {detail}"""


class UnsafePath(LayerError):
    """image {reference}: layer {layer}: unsafe path {entry!r}: {detail}"""

    entry: str


class SpecialFile(LayerError):
    """image {reference}: layer {layer}: {entry!r} is a {detail}: special files are refused"""

    entry: str


class LayerTooLarge(LayerError):
    """image {reference}: layer {layer}: the image unpacks to more than {limit} {unit}"""

    limit: int
    unit: str


class UnpackFailed(LayerError):
    """image {reference}: layer {layer}: cannot write {entry!r}: {detail}"""

    entry: str


class DiskBuildError(ImageError):
    """image {reference}: building the erofs disk failed: {detail}"""

    detail: str
