"""Image references: parsing, Docker Hub normalisation, and the pinning rule.

Grammar (distribution/reference, the one `docker pull` uses):

```
reference  := name [":" tag] ["@" digest]
name       := [domain "/"] component ("/" component)*
domain     := host [":" port]       first part, only if it has "." or ":", is "localhost",
                                    or has an upper-case letter; otherwise the name is on Docker Hub
component  := [a-z0-9]+ (("." | "_" | "__" | "-"+) [a-z0-9]+)*
tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
digest     := "sha256:" 64 lowercase hex        (the only algorithm registries use)
```

Docker Hub: `python` -> registry `docker.io`, repository `library/python`; its API lives at
`registry-1.docker.io`. A missing tag means `latest`.

Only a digest pins an image: every tag is mutable, `1.0` included. Sandboxes record the pinned
form (`registry/repository@sha256:...`) that a pull resolved. At create, `refuse_floating`
turns away references that are certain to drift (no tag, `latest`, `lts`, `stable`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from isorun_hostd.images.errors import FloatingReference, InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
FLOATING_TAGS = frozenset({"latest", "lts", "stable"})
MAX_NAME_CHARS = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_DOMAIN = re.compile(
    r"(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
    r"(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*"
    r"|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]+)?"
)


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference.

    Attributes:
        registry: Registry as users write it (`docker.io`, `127.0.0.1:5000`, `ghcr.io`).
        repository: Repository path (`library/python`, `isorun/busybox`).
        tag: Tag, or None when the reference names only a digest or nothing at all.
        digest: `sha256:<hex>` when pinned.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse `text` following the distribution grammar, normalising Docker Hub names.

        Raises:
            InvalidReference: The text does not follow the grammar.
        """
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST.fullmatch(digest):
                raise InvalidReference(text, detail="digest must be sha256: and 64 lowercase hex")
        tag = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise InvalidReference(text, detail=f"bad tag {tag!r}")
        if not rest:
            raise InvalidReference(text, detail="empty name")
        if len(rest) > MAX_NAME_CHARS:
            raise InvalidReference(text, detail=f"name longer than {MAX_NAME_CHARS} characters")
        registry, repository = _split_domain(rest)
        if registry is None:
            registry = DOCKER_HUB
        elif not _DOMAIN.fullmatch(registry):
            raise InvalidReference(text, detail=f"bad registry {registry!r}")
        if registry in DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
            if "/" not in repository:
                repository = f"library/{repository}"
        for component in repository.split("/"):
            if not _COMPONENT.fullmatch(component):
                raise InvalidReference(
                    text, detail=f"bad repository component {component!r} (lowercase only)"
                )
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def pinned(self) -> bool:
        """True when the reference names a digest, the only immutable form."""
        return self.digest is not None

    @property
    def api_host(self) -> str:
        """Host (and port) that serves the registry API for this reference."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def target(self) -> str:
        """What to ask `/v2/<repo>/manifests/` for: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        """The pinned form: same repository, `digest`, no tag."""
        return replace(self, tag=None, digest=digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_domain(name: str) -> tuple[str | None, str]:
    first, sep, rest = name.partition("/")
    if not sep:
        return None, name
    if "." in first or ":" in first or first == "localhost" or first.lower() != first:
        return first, rest
    return None, name


def refuse_floating(text: str) -> Reference:
    """Parse a reference given at sandbox create, refusing tags that are certain to drift.

    A digest is always accepted (a tag next to it is informational). Otherwise the tag must be
    present and not one of `latest`, `lts`, `stable`.

    Raises:
        InvalidReference: The text is not a reference.
        FloatingReference: No tag, or a floating one; the message says how to pin.

    Example:
        `refuse_floating("python")` raises `FloatingReference`: "image 'python' has no tag: pin a
        version tag or a digest, e.g. python:<version> or python@sha256:<digest>".
    """
    reference = Reference.parse(text)
    if reference.pinned:
        return reference
    name = text.split("@", 1)[0]
    if reference.tag is not None:
        name = name[: -len(reference.tag) - 1]
    example = f"{name}:<version> or {name}@sha256:<digest>"
    if reference.tag is None:
        raise FloatingReference(text, detail="has no tag", example=example)
    if reference.tag.lower() in FLOATING_TAGS:
        raise FloatingReference(
            text, detail=f"uses the floating tag {reference.tag!r}", example=example
        )
    return reference
