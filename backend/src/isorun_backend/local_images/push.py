"""Push an image from an OCI layout to a registry over the distribution v2 API, with httpx.

skopeo 1.9 cannot read Docker media types from an OCI layout, and pushes of indexes with
attestations fail its conversion, so the fixtures and `isorun up`'s local base images are pushed
by this small client instead:

```
HEAD /v2/<repo>/blobs/<digest>                    200: already there
POST /v2/<repo>/blobs/uploads/                    202 Location: <upload url>
PUT  <upload url>?digest=<digest>  (whole blob)   201  (monolithic upload)
PUT  /v2/<repo>/manifests/<digest or tag>         201  Content-Type: the manifest's media type
```

Children of an index are pushed (by digest) before the index, config and layers before their
manifest, because the registry refuses manifests that reference unknown content.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx

from isorun_backend.local_images.oci import DOCKER_LIST, OCI_INDEX, read_blob, tagged

PUSH_TIMEOUT_S = 120.0


class RegistryPushAuth(httpx.Auth):
    """Answers Basic and Bearer (token, push+pull scope) challenges with `username:password`."""

    requires_response_body = True

    def __init__(self, username: str, password: str) -> None:
        raw = f"{username}:{password}".encode()
        self._basic = "Basic " + base64.b64encode(raw).decode("ascii")
        self._header: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._header is not None:
            request.headers["Authorization"] = self._header
        response = yield request
        if response.status_code != 401:
            return
        challenge = response.headers.get("www-authenticate", "")
        scheme, _, params_text = challenge.partition(" ")
        if scheme.lower() == "basic":
            self._header = self._basic
        else:
            params = dict(
                part.split("=", 1)
                for part in params_text.replace('"', "").split(",")
                if "=" in part
            )
            query = {"service": params.get("service", "")}
            if "scope" in params:
                query["scope"] = params["scope"].replace(":pull", ":pull,push")
            token_request = httpx.Request("GET", params["realm"], params=query)
            token_request.headers["Authorization"] = self._basic
            token_response = yield token_request
            token_response.raise_for_status()
            body = token_response.json()
            self._header = f"Bearer {body.get('token') or body['access_token']}"
        request.headers["Authorization"] = self._header
        yield request


def push(
    layout: Path,
    registry_url: str,
    repo: str,
    tag: str,
    auth: tuple[str, str] | None = None,
    *,
    source_tag: str | None = None,
) -> str:
    """Push the image tagged `source_tag` (default: `tag`) in `layout` as `repo:tag`.

    Returns:
        The digest of the pushed top-level manifest or index.
    """
    descriptor = tagged(layout, source_tag or tag)
    client_auth = RegistryPushAuth(*auth) if auth else None
    with httpx.Client(
        base_url=registry_url, auth=client_auth, timeout=PUSH_TIMEOUT_S, trust_env=False
    ) as client:
        _push_manifest(client, layout, repo, descriptor, tag)
    return str(descriptor["digest"])


def _push_manifest(
    client: httpx.Client, layout: Path, repo: str, descriptor: dict[str, Any], reference: str
) -> None:
    body = read_blob(layout, descriptor["digest"])
    document = json.loads(body)
    if descriptor["mediaType"] in (OCI_INDEX, DOCKER_LIST):
        for child in document["manifests"]:
            _push_manifest(client, layout, repo, child, child["digest"])
    else:
        for blob in [document["config"], *document["layers"]]:
            push_blob(client, repo, read_blob(layout, blob["digest"]), blob["digest"])
    response = client.put(
        f"/v2/{repo}/manifests/{reference}",
        content=body,
        headers={"Content-Type": descriptor["mediaType"]},
    )
    response.raise_for_status()


def push_blob(client: httpx.Client, repo: str, data: bytes, digest: str) -> None:
    if client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
        return
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    started.raise_for_status()
    location = httpx.URL(started.headers["location"])
    # Location carries the upload state in its query; params= would replace it, not add to it.
    finished = client.put(
        location.copy_add_param("digest", digest),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    finished.raise_for_status()
