"""`Client` and `AsyncClient`: the connection to the API, and the only code that sends.

Both hold one httpx client (pooled connections, base URL, API key, timeouts) and mirror each
other line for line; everything that is not I/O is in `_base`. Any number of sandboxes can
share one client.

Retries: an idempotent call (`ApiRequest.idempotent`: GET, DELETE, create with its
`Idempotency-Key`) that fails with a `retryable` error (no connection made, 502/503/504) is
sent again, `max_retries` times at most, after an exponential backoff with jitter. The same
built request is re-sent, so the create call's `Idempotency-Key` is the same on every attempt.
Nothing else is ever retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from isorun import _routes
from isorun._audit import AsyncAudit, Audit
from isorun._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF_S,
    DEFAULT_TIMEOUT,
    RETRY_BACKOFF_MAX_S,
    ApiRequest,
    ClientState,
    M,
    Page,
    build_request,
    client_headers,
    error_from_response,
    logger,
    next_page,
    parse_model,
    should_retry,
    ssl_context,
    translate_transport_errors,
)
from isorun._config import resolve
from isorun._errors import UsageError
from isorun._models import Health
from isorun._snapshots import AsyncSnapshots, Snapshots
from isorun._terminal_wire import WebSocketTarget, websocket_url


class _ClientSettings:
    """Settings and state both clients hold; no I/O."""

    def __init__(
        self,
        *,
        api_key: str | None,
        api_url: str | None,
        timeout: httpx.Timeout | float | None,
        max_retries: int,
        retry_backoff_s: float,
        transport: object,
    ) -> None:
        config = resolve(api_key, api_url)
        self.api_url = config.api_url
        self.timeout = httpx.Timeout(timeout)
        self.max_retries = max_retries
        self._headers = client_headers(config.api_key)
        self._state = ClientState.UNOPENED
        # A transport given in place of the network (a fake) cannot carry a WebSocket.
        self._own_transport = transport is not None
        # Composed rather than wait_exponential, wait_random, whose keywords differ across tenacity
        # 9.x (deepagents' dependencies hold tenacity below 9.2).
        self._wait = wait_exponential(
            multiplier=retry_backoff_s, max=RETRY_BACKOFF_MAX_S
        ) + wait_random(0, retry_backoff_s)

    @property
    def is_closed(self) -> bool:
        """True once the client has been closed; it cannot be reopened."""
        return self._state is ClientState.CLOSED

    def _enter_state(self) -> None:
        if self._state is ClientState.CLOSED:
            raise UsageError("the isorun client is closed")
        self._state = ClientState.OPENED

    def websocket_target(self, path: str, params: Mapping[str, str]) -> WebSocketTarget:
        """Where to open a WebSocket of the API (a shell's attach), with this client's key,
        TLS settings and timeout for the opening.

        Raises:
            UsageError: The client is closed, sends through a transport of its own (such as
                `FakeBackend`, which has no WebSockets), or has a URL that is not http(s).
        """
        self._enter_state()
        if self._own_transport:
            raise UsageError("a client with a transport= cannot attach to shells: no WebSockets")
        url = websocket_url(self.api_url, path, params)
        # The attach may resume a hibernated sandbox before its first frame, as any call may
        # before its answer: the read timeout bounds that wait, the connect one the connection.
        waits = [t for t in (self.timeout.connect, self.timeout.read) if t is not None]
        return WebSocketTarget(
            url=url,
            headers=self._headers,
            ssl=ssl_context() if url.startswith("wss:") else None,
            open_timeout=sum(waits) if len(waits) == 2 else None,
        )

    def _stop(self, req: ApiRequest) -> stop_after_attempt:
        return stop_after_attempt(1 + (self.max_retries if req.idempotent else 0))


_RETRY_IF = retry_if_exception(should_retry)


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome.exception() if state.outcome else None
    logger.info("retrying after attempt %d failed: %s", state.attempt_number, outcome)


class Client(_ClientSettings):
    """A synchronous connection to the isorun API.

    Args:
        api_key: The API key; `ISORUN_API_KEY` when None.
        api_url: The API's base URL; `ISORUN_API_URL`, else `http://127.0.0.1:8080`.
        timeout: Default HTTP timeout (seconds or an `httpx.Timeout`; None for none). Exec
            calls extend the read timeout by the command's own `timeout_s`.
        max_retries: Retries of an idempotent call after a retryable failure.
        retry_backoff_s: First backoff between retries (doubling, with jitter).
        transport: An httpx transport to send through instead of the network, such as
            `isorun.testing.FakeBackend` or `httpx.MockTransport`.

    Raises:
        UsageError: No API key was given or configured.

    Example:
        >>> with Client() as client:  # doctest: +SKIP
        ...     sb = Sandbox("python", client=client)
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_url: str | None = None,
        timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            api_url=api_url,
            timeout=timeout,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            transport=transport,
        )
        self._http = httpx.Client(
            base_url=self.api_url,
            headers=self._headers,
            timeout=self.timeout,
            transport=transport,
            verify=ssl_context(),
        )
        self.snapshots = Snapshots(self)
        """The tenant's snapshots: `list()`, `get(id)`, `delete(id)`."""
        self.audit = Audit(self)
        """The nodes' audit log: `list(sandbox_id)`, `verify()`."""

    def __enter__(self) -> Client:
        self._enter_state()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        self._state = ClientState.CLOSED
        self._http.close()

    def health(self) -> Health:
        """Ask the API whether it is up (needs no key, but the client has one anyway).

        Raises:
            TransportError: The API could not be reached.
            APIError: The API answered with an error.
        """
        return parse_model(Health, self.send(_routes.health()))

    def send(self, req: ApiRequest) -> httpx.Response:
        """Send `req` (with retries when idempotent) and return its read response.

        Raises:
            APIError: A subclass, for an error status.
            TransportError: A subclass, when the exchange failed.
            OutcomeUnknown: A non-idempotent call lost its answer.
            UsageError: The client is closed.
        """
        return self._open(req, stream=False)

    @contextmanager
    def stream(self, req: ApiRequest) -> Iterator[httpx.Response]:
        """Send `req` and yield its response with the body still unread.

        Errors while reading the body inside the block are translated too; the response is
        closed on the way out.

        Raises:
            The same errors as `send`.
        """
        response = self._open(req, stream=True)
        try:
            with translate_transport_errors(req):
                yield response
        finally:
            response.close()

    def paginate(self, req: ApiRequest, model: type[M]) -> Iterator[M]:
        """Yield the items of a list call, fetching the next page (by cursor) as needed.

        Raises:
            The same errors as `send`, from the page that failed.
        """
        next_req: ApiRequest | None = req
        while next_req is not None:
            page = parse_model(Page[model], self.send(next_req))  # type: ignore[valid-type]
            yield from page.data
            next_req = next_page(next_req, page)

    def _open(self, req: ApiRequest, *, stream: bool) -> httpx.Response:
        self._enter_state()
        with translate_transport_errors(req):
            request = build_request(self._http, req)
        retrying = Retrying(
            stop=self._stop(req),
            wait=self._wait,
            retry=_RETRY_IF,
            reraise=True,
            before_sleep=_log_retry,
        )
        return retrying(self._attempt, req, request, stream)

    def _attempt(self, req: ApiRequest, request: httpx.Request, stream: bool) -> httpx.Response:
        with translate_transport_errors(req):
            response = self._http.send(request, stream=stream)
            if response.is_error:
                try:
                    response.read()
                finally:
                    response.close()
                raise error_from_response(response, sandbox_id=req.sandbox_id)
        logger.debug("%s %s -> %d", req.method, req.path, response.status_code)
        return response


class AsyncClient(_ClientSettings):
    """An asyncio connection to the isorun API; the twin of `Client`, same arguments.

    Args:
        api_key: The API key; `ISORUN_API_KEY` when None.
        api_url: The API's base URL; `ISORUN_API_URL`, else `http://127.0.0.1:8080`.
        timeout: Default HTTP timeout (seconds or an `httpx.Timeout`; None for none).
        max_retries: Retries of an idempotent call after a retryable failure.
        retry_backoff_s: First backoff between retries (doubling, with jitter).
        transport: An async httpx transport, such as `isorun.testing.FakeBackend`.

    Raises:
        UsageError: No API key was given or configured.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_url: str | None = None,
        timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            api_url=api_url,
            timeout=timeout,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            transport=transport,
        )
        self._http = httpx.AsyncClient(
            base_url=self.api_url,
            headers=self._headers,
            timeout=self.timeout,
            transport=transport,
            verify=ssl_context(),
        )
        self.snapshots = AsyncSnapshots(self)
        """The tenant's snapshots: `list()`, `await get(id)`, `await delete(id)`."""
        self.audit = AsyncAudit(self)
        """The nodes' audit log: `list(sandbox_id)`, `await verify()`."""

    async def __aenter__(self) -> AsyncClient:
        self._enter_state()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        self._state = ClientState.CLOSED
        await self._http.aclose()

    async def health(self) -> Health:
        """Ask the API whether it is up.

        Raises:
            TransportError: The API could not be reached.
            APIError: The API answered with an error.
        """
        return parse_model(Health, await self.send(_routes.health()))

    async def send(self, req: ApiRequest) -> httpx.Response:
        """Send `req` (with retries when idempotent) and return its read response.

        Raises:
            APIError: A subclass, for an error status.
            TransportError: A subclass, when the exchange failed.
            OutcomeUnknown: A non-idempotent call lost its answer.
            UsageError: The client is closed.
        """
        return await self._open(req, stream=False)

    @asynccontextmanager
    async def stream(self, req: ApiRequest) -> AsyncIterator[httpx.Response]:
        """Send `req` and yield its response with the body still unread.

        Raises:
            The same errors as `send`.
        """
        response = await self._open(req, stream=True)
        try:
            with translate_transport_errors(req):
                yield response
        finally:
            await response.aclose()

    async def paginate(self, req: ApiRequest, model: type[M]) -> AsyncIterator[M]:
        """Yield the items of a list call, fetching the next page (by cursor) as needed.

        Raises:
            The same errors as `send`, from the page that failed.
        """
        next_req: ApiRequest | None = req
        while next_req is not None:
            page = parse_model(Page[model], await self.send(next_req))  # type: ignore[valid-type]
            for item in page.data:
                yield item
            next_req = next_page(next_req, page)

    async def _open(self, req: ApiRequest, *, stream: bool) -> httpx.Response:
        self._enter_state()
        with translate_transport_errors(req):
            request = build_request(self._http, req)
        retrying = AsyncRetrying(
            stop=self._stop(req),
            wait=self._wait,
            retry=_RETRY_IF,
            reraise=True,
            before_sleep=_log_retry,
        )
        return await retrying(self._attempt, req, request, stream)

    async def _attempt(
        self, req: ApiRequest, request: httpx.Request, stream: bool
    ) -> httpx.Response:
        with translate_transport_errors(req):
            response = await self._http.send(request, stream=stream)
            if response.is_error:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                raise error_from_response(response, sandbox_id=req.sandbox_id)
        logger.debug("%s %s -> %d", req.method, req.path, response.status_code)
        return response
