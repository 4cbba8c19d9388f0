"""OCI images: pull from a registry, verify, unpack and build a read-only erofs disk.

`ImageStore.pull` is the entry point; `refuse_floating` is the create-time pinning rule.
"""

from isorun_hostd.images.auth import RegistryCredentials
from isorun_hostd.images.errors import (
    AuthenticationFailed,
    BlobUnknown,
    ContentTooLarge,
    CorruptLayer,
    DigestMismatch,
    DiskBuildError,
    FloatingReference,
    ImageError,
    ImageReferenceError,
    InsecureRegistry,
    InvalidReference,
    LayerError,
    LayerTooLarge,
    ManifestUnknown,
    PlatformNotFound,
    RegistryError,
    RegistryProtocolError,
    RegistryUnreachable,
    SpecialFile,
    UnpackFailed,
    UnsafePath,
    UnsupportedMediaType,
    VerificationError,
)
from isorun_hostd.images.reference import Reference, refuse_floating
from isorun_hostd.images.store import ImageConfig, ImageDisk, ImageStore, PullProgress
from isorun_hostd.images.unpack import UnpackLimits

__all__ = [
    "AuthenticationFailed",
    "BlobUnknown",
    "ContentTooLarge",
    "CorruptLayer",
    "DigestMismatch",
    "DiskBuildError",
    "FloatingReference",
    "ImageConfig",
    "ImageDisk",
    "ImageError",
    "ImageReferenceError",
    "ImageStore",
    "InsecureRegistry",
    "InvalidReference",
    "LayerError",
    "LayerTooLarge",
    "ManifestUnknown",
    "PlatformNotFound",
    "PullProgress",
    "Reference",
    "RegistryCredentials",
    "RegistryError",
    "RegistryProtocolError",
    "RegistryUnreachable",
    "SpecialFile",
    "UnpackFailed",
    "UnpackLimits",
    "UnsafePath",
    "UnsupportedMediaType",
    "VerificationError",
    "refuse_floating",
]
