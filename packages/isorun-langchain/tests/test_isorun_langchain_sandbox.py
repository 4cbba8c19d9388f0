"""`IsorunSandbox` and its async twin on the fake API: results, exit codes, error literals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from isorun import AsyncSandbox, Sandbox
from isorun.testing import FakeBackend
from isorun_langchain import AsyncIsorunSandbox, IsorunSandbox


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def sandbox(fake: FakeBackend) -> Iterator[Sandbox]:
    with Sandbox("python", transport=fake, api_key=fake.api_key) as sb:
        yield sb


@pytest.fixture
async def async_sandbox(fake: FakeBackend) -> AsyncIterator[AsyncSandbox]:
    async with AsyncSandbox.create("python", transport=fake, api_key=fake.api_key) as sb:
        yield sb


def test_execute_combines_output_and_passes_workdir(fake: FakeBackend, sandbox: Sandbox) -> None:
    fake.script_exec("make", stdout="built\n", stderr="warning\n", exit_code=2)
    backend = IsorunSandbox(sandbox=sandbox, workdir="/src")

    response = backend.execute("make")

    assert (response.output, response.exit_code, response.truncated) == (
        "built\nwarning",
        2,
        False,
    )
    assert fake.exec_calls[0].cwd == "/src"
    assert backend.id == sandbox.id


def test_timeout_is_exit_124_with_a_notice(fake: FakeBackend, sandbox: Sandbox) -> None:
    fake.script_exec("sleep 9", stdout="partial\n", exit_code=None, timed_out=True)

    response = IsorunSandbox(sandbox=sandbox).execute("sleep 9", timeout=3)

    assert response.exit_code == 124
    assert response.output == "partial\nCommand timed out after 3 seconds."


# No limit goes on the wire as timeout_s 0.
@pytest.mark.parametrize(("timeout", "sent_s"), [(None, 1800), (5, 5), (0, 0)])
def test_timeout_argument(
    fake: FakeBackend, sandbox: Sandbox, timeout: int | None, sent_s: int
) -> None:
    IsorunSandbox(sandbox=sandbox).execute("true", timeout=timeout)

    assert fake.exec_calls[0].timeout_s == sent_s


def test_upload_and_download_report_each_file(sandbox: Sandbox) -> None:
    backend = IsorunSandbox(sandbox=sandbox)
    sandbox.files.write("/etc/plain", "x", parents=True)

    uploads = backend.upload_files([("/new/dir/a.txt", b"A"), ("/etc/plain/b.txt", b"B")])
    downloads = backend.download_files(["/new/dir/a.txt", "/missing", "/new/dir"])

    assert [(u.path, u.error) for u in uploads] == [
        ("/new/dir/a.txt", None),
        ("/etc/plain/b.txt", "invalid_path"),
    ]
    assert [(d.path, d.content, d.error) for d in downloads] == [
        ("/new/dir/a.txt", b"A", None),
        ("/missing", None, "file_not_found"),
        ("/new/dir", None, "is_directory"),
    ]


def test_relative_paths_resolve_against_workdir(sandbox: Sandbox) -> None:
    backend = IsorunSandbox(sandbox=sandbox, workdir="/work")

    [upload] = backend.upload_files([("a.txt", b"A")])

    assert upload.error is None
    assert sandbox.files.read("/work/a.txt") == b"A"


async def test_async_twin_is_native(fake: FakeBackend, async_sandbox: AsyncSandbox) -> None:
    fake.script_exec("echo hi", stdout="hi\n")
    backend = AsyncIsorunSandbox(sandbox=async_sandbox)

    uploads = await backend.aupload_files([("/a/b.txt", b"B")])
    downloads = await backend.adownload_files(["/a/b.txt", "/a/none"])
    response = await backend.aexecute("echo hi")

    assert [u.error for u in uploads] == [None]
    assert [(d.content, d.error) for d in downloads] == [(b"B", None), (None, "file_not_found")]
    assert (response.output, response.exit_code) == ("hi", 0)
    with pytest.raises(NotImplementedError, match="ainvoke"):
        backend.execute("echo")
