"""Reading small registry answers (manifests, tokens) without trusting their size or encoding.

httpx decodes `Content-Encoding` (gzip, deflate, br, zstd) in `aiter_bytes()`, `read()` and
`.content`, so a cap applied to decoded bytes comes after a 25 KB body has already inflated to
gigabytes. Every request of a pull therefore asks for `Accept-Encoding: identity`, and these
answers are read with `aiter_raw()` (the bytes as sent), counted against the cap as they arrive,
and refused outright when the server encoded them anyway. Blobs are streamed with `aiter_raw()`
too and verified on those raw bytes (see `RegistryClient.blob`).
"""

from __future__ import annotations

import httpx

from isorun_hostd.images.errors import ContentTooLarge, RegistryProtocolError, RegistryUnreachable

IDENTITY = "identity"
REQUEST_HEADERS = {"Accept-Encoding": IDENTITY}


def check_identity(response: httpx.Response, reference: str, registry: str, what: str) -> None:
    """Refuse an answer whose body is content-encoded (we asked for identity).

    Raises:
        RegistryProtocolError: Any coding other than identity.
    """
    header = response.headers.get("content-encoding", "")
    codings = [coding.strip().lower() for coding in header.split(",") if coding.strip()]
    if any(coding != IDENTITY for coding in codings):
        raise RegistryProtocolError(
            reference,
            registry=registry,
            detail=f"{what} came with Content-Encoding {header!r} (only identity is accepted)",
        )


async def read_capped(
    response: httpx.Response, *, reference: str, registry: str, what: str, limit: int
) -> bytes:
    """The raw body of a streamed `response`, refusing more than `limit` bytes as they arrive.

    Raises:
        RegistryProtocolError: A Content-Encoding other than identity.
        ContentTooLarge: Content-Length or the bytes received exceed `limit`.
        RegistryUnreachable: The connection failed while reading.
    """
    check_identity(response, reference, registry, what)
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ContentTooLarge(reference, what=what, limit_bytes=limit)
    body = bytearray()
    try:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > limit:
                raise ContentTooLarge(reference, what=what, limit_bytes=limit)
    except httpx.RequestError as exc:
        raise RegistryUnreachable(
            reference, registry=registry, detail=f"{type(exc).__name__}: {exc}"
        ) from exc
    return bytes(body)
