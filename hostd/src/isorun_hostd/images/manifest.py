"""OCI and Docker v2 manifest, index and config documents, and platform selection.

Only the fields isorun uses are modelled; unknown fields are ignored. Documents:
OCI image-spec v1.1 (manifest.md, image-index.md, config.md) and Docker Image Manifest V2
Schema 2. Schema 1 manifests are refused (unsigned, no content addressing of config).

```
index / manifest list --(linux/amd64 entry)--> manifest --config--> config (diff_ids, Env, Cmd)
                                                         `-layers--> layer blobs (tar, gzip, zstd)
```

BuildKit puts attestation manifests into an index as `unknown/unknown` entries annotated with
`vnd.docker.reference.type: attestation-manifest`; they are skipped, and they are left out of the
list of platforms that an index without linux/amd64 reports.
"""

from __future__ import annotations

import hashlib
import json
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from isorun_hostd.images.errors import (
    ImageError,
    PlatformNotFound,
    RegistryProtocolError,
    UnsupportedMediaType,
)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

# Every type we can use, on every manifest request: distribution 2.8 answers a partial list with
# a 404 (OCI content) or a converted schema1 manifest with a different digest.
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
WANTED_OS = "linux"
WANTED_ARCHITECTURE = "amd64"


class _Document(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)


_D = TypeVar("_D", bound=_Document)


class Platform(_Document):
    architecture: str
    os: str
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


class Descriptor(_Document):
    """A content descriptor (OCI image-spec descriptor.md)."""

    media_type: str = Field(alias="mediaType")
    digest: str = Field(pattern=r"^sha256:[a-f0-9]{64}$")
    size: int = Field(ge=0)
    platform: Platform | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class Index(_Document):
    """An OCI image index or a Docker manifest list."""

    schema_version: int = Field(alias="schemaVersion")
    manifests: list[Descriptor]


class Manifest(_Document):
    """An OCI image manifest or a Docker v2 schema 2 manifest."""

    schema_version: int = Field(alias="schemaVersion")
    config: Descriptor
    layers: list[Descriptor]


class RuntimeConfig(_Document):
    env: list[str] | None = Field(default=None, alias="Env")
    entrypoint: list[str] | None = Field(default=None, alias="Entrypoint")
    cmd: list[str] | None = Field(default=None, alias="Cmd")
    working_dir: str = Field(default="", alias="WorkingDir")
    user: str = Field(default="", alias="User")


class RootFS(_Document):
    type: str
    diff_ids: list[str]


class ConfigFile(_Document):
    """The image config blob (OCI image-spec config.md)."""

    architecture: str = ""
    os: str = ""
    config: RuntimeConfig | None = None
    rootfs: RootFS


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def media_type_of(body: bytes, content_type: str | None, reference: str) -> str:
    """The document's `mediaType` field, else the Content-Type header, else its shape.

    OCI allows documents without `mediaType`; read back from the blob store they have no
    header either, so an object with `manifests` is an index and one with `layers` a manifest.
    """
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise UnsupportedMediaType(
            reference, media_type=content_type or "", what="manifest (not JSON)"
        ) from exc
    if not isinstance(document, dict):
        raise UnsupportedMediaType(
            reference, media_type=content_type or "", what="manifest (not a JSON object)"
        )
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    header = (content_type or "").split(";")[0].strip()
    if header and header != "application/json":
        return header
    if "manifests" in document:
        return OCI_INDEX
    if "layers" in document:
        return OCI_MANIFEST
    return header


def parse_document(model: type[_D], body: bytes, reference: str, registry: str, what: str) -> _D:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RegistryProtocolError(
            reference, registry=registry, detail=f"invalid {what}: {where}: {first['msg']}"
        ) from exc


def select_platform(index: Index, reference: str) -> Descriptor:
    """Pick the linux/amd64 image manifest of `index`, skipping attestations.

    Raises:
        PlatformNotFound: No linux/amd64 entry; the message lists the platforms on offer.
    """
    available: list[str] = []
    for entry in index.manifests:
        if entry.annotations.get(ATTESTATION_ANNOTATION) == "attestation-manifest":
            continue
        if entry.platform is None:
            available.append("(no platform)")
            continue
        if entry.platform.os == WANTED_OS and entry.platform.architecture == WANTED_ARCHITECTURE:
            return entry
        available.append(str(entry.platform))
    raise PlatformNotFound(reference, available=", ".join(available) or "none")


def check_media_type(media_type: str, allowed: frozenset[str], what: str, reference: str) -> None:
    if media_type not in allowed:
        raise UnsupportedMediaType(reference, media_type=media_type, what=what)


def chain_id(diff_ids: list[str], reference: str) -> str:
    """The ChainID of the layer stack (OCI image-spec config.md, "Layer ChainID").

    ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)).
    """
    if not diff_ids:
        raise ImageError(reference, detail="image has no layers")
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = sha256_digest(f"{chain} {diff_id}".encode())
    return chain
