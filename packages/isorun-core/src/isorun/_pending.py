"""An async call that can be awaited or entered with `async with`, once."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

from isorun._errors import UsageError

T = TypeVar("T")


class Pending(Awaitable[T], AbstractAsyncContextManager[T], Generic[T]):
    """`await` it for the value, or enter it with `async with`, which also ends the value on
    exit (`_end`). Nothing runs until then, and it can be used once."""

    _what = "this call"

    def __init__(self, start: Callable[[], Awaitable[T]]) -> None:
        self._start: Callable[[], Awaitable[T]] | None = start
        self._value: T | None = None

    def _take(self) -> Callable[[], Awaitable[T]]:
        if self._start is None:
            raise UsageError(f"{self._what} was already awaited or entered")
        start, self._start = self._start, None
        return start

    def __await__(self) -> Generator[Any, None, T]:
        return self._take()().__await__()

    async def __aenter__(self) -> T:
        self._value = await self._take()()
        return self._value

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._value is not None:
            await self._end(self._value, exc_type, exc, tb)

    @abstractmethod
    async def _end(
        self,
        value: T,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
