import asyncio

from isorun_hostd.vm.console import ConsoleRing


def test_ring_keeps_only_the_tail() -> None:
    ring = ConsoleRing(limit_bytes=100)
    for i in range(1000):
        ring.feed(b"line %d\n" % i)
    assert ring.total_bytes > 100
    assert ring.tail(2) == "line 998\nline 999"
    assert len(ring.tail(1000)) <= 100


async def test_drain_reads_until_the_stream_closes() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"\xffboot\npanic: oops\n")
    reader.feed_eof()
    ring = ConsoleRing()
    await ring.drain(reader)
    assert ring.tail() == "\ufffdboot\npanic: oops"
