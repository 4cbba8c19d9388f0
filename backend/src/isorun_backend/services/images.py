"""Image names at create: short names through the deployment's alias table, and what each of
hostd's image errors means for the caller.

A name without ``:``, ``/`` or ``@`` is a short name and must be in the table; anything else is
an OCI reference that hostd pins (a floating tag such as ``latest`` is refused there).
"""

from __future__ import annotations

from isorun_hostd.images import (
    AuthenticationFailed,
    BlobUnknown,
    ContentTooLarge,
    CorruptLayer,
    DigestMismatch,
    DiskBuildError,
    FloatingReference,
    ImageError,
    InsecureRegistry,
    InvalidReference,
    LayerTooLarge,
    ManifestUnknown,
    PlatformNotFound,
    RegistryProtocolError,
    RegistryUnreachable,
    SpecialFile,
    UnpackFailed,
    UnsafePath,
    UnsupportedMediaType,
)

from isorun_backend.services.errors import (
    ImageRejected,
    ImageUnavailable,
    InternalError,
    ServiceError,
    Unavailable,
)

# Every concrete ImageError, decided one by one (a test holds this to hostd's error tree):
# rejected when the caller's image or reference is at fault, unavailable when the registry is,
# and ours (503/500) when this host failed to unpack or build what it fetched.
IMAGE_ERRORS: dict[type[ImageError], type[ServiceError]] = {
    InvalidReference: ImageRejected,
    FloatingReference: ImageRejected,
    InsecureRegistry: ImageRejected,  # the reference names a plain-HTTP registry we may not use
    ManifestUnknown: ImageRejected,  # no such tag or digest
    DigestMismatch: ImageRejected,
    ContentTooLarge: ImageRejected,
    UnsupportedMediaType: ImageRejected,
    PlatformNotFound: ImageRejected,
    CorruptLayer: ImageRejected,
    UnsafePath: ImageRejected,
    SpecialFile: ImageRejected,
    LayerTooLarge: ImageRejected,  # unpacks past this host's byte or entry limits
    RegistryUnreachable: ImageUnavailable,
    AuthenticationFailed: ImageUnavailable,  # our registry credentials, not the caller's
    BlobUnknown: ImageUnavailable,  # the registry lists a blob it cannot serve
    RegistryProtocolError: ImageUnavailable,
    UnpackFailed: Unavailable,  # scratch space full or unwritable on this host
    DiskBuildError: InternalError,
}


def is_short_name(image: str) -> bool:
    return not any(c in image for c in ":/@")


def resolve(image: str, aliases: dict[str, str]) -> str:
    """The OCI reference to pull for ``image`` as the caller gave it.

    Raises:
        ImageRejected: a short name that is not in ``aliases``.
    """
    if not is_short_name(image):
        return image
    if image in aliases:
        return aliases[image]
    known = ", ".join(sorted(aliases)) or "none configured"
    raise ImageRejected(
        f"unknown image short name {image!r}; known short names: {known}; "
        "or give a pinned reference such as registry/repo:1.2.3"
    )


def translate(exc: ImageError) -> ServiceError:
    """The service error for a hostd image error; an unmapped class is an internal error."""
    for cls in type(exc).__mro__:
        if cls in IMAGE_ERRORS:
            return IMAGE_ERRORS[cls](str(exc))
    return InternalError(f"image {exc.reference}: {exc}")
