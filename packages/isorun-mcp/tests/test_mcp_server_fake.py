"""The MCP server through the mcp package's own client session, over a fake isorun API."""

from __future__ import annotations

from typing import Any

from isorun import AsyncClient, AsyncSandbox, Secret
from isorun.testing import FakeBackend
from isorun_mcp import build_server
from mcp import ClientSession
from mcp.shared.memory import create_connected_server_and_client_session
from mcp.types import CallToolResult, TextContent

CORE = {
    "sandbox_create",
    "sandbox_exec",
    "sandbox_read_file",
    "sandbox_write_file",
    "sandbox_list_dir",
    "sandbox_delete",
}
FULL_EXTRA = {
    "sandbox_list",
    "sandbox_url",
    "sandbox_keep_alive",
    "sandbox_processes",
    "sandbox_stat",
    "sandbox_mkdir",
    "sandbox_remove",
    "sandbox_rename",
    "sandbox_fork",
    "sandbox_snapshot",
    "sandbox_list_snapshots",
    "sandbox_delete_snapshot",
    "sandbox_hibernate",
    "sandbox_resume",
    "sandbox_network",
    "shell_open",
    "shell_write",
    "shell_read",
    "shell_signal",
    "shell_close",
    "shell_list",
}


async def call(client: ClientSession, name: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured content."""
    result = await client.call_tool(name, arguments)
    assert not result.isError, result.content
    assert result.structuredContent is not None
    return result.structuredContent


async def call_error(client: ClientSession, name: str, **arguments: Any) -> str:
    """Call a tool that must fail; return the error text the model would read."""
    result: CallToolResult = await client.call_tool(name, arguments)
    assert result.isError
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


async def test_core_profile_lists_six_tools_with_output_schemas(connect: Any) -> None:
    async with connect("core") as client:
        tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} == CORE
    assert all(tool.outputSchema and tool.description for tool in tools)
    exec_tool = next(tool for tool in tools if tool.name == "sandbox_exec")
    assert exec_tool.inputSchema["required"] == ["sandbox_id", "command"]
    assert set(exec_tool.outputSchema["properties"]) >= {  # type: ignore[index]
        "exit_code",
        "stdout",
        "stderr",
        "timed_out",
    }


async def test_full_profile_adds_what_the_api_has(connect: Any) -> None:
    async with connect("full") as client:
        tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} == CORE | FULL_EXTRA


async def test_shell_tools_document_their_input(connect: Any) -> None:
    async with connect("full") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    write = tools["shell_write"]
    assert write.inputSchema["required"] == ["sandbox_id", "shell_id", "input"]
    assert "Ctrl-C" in write.inputSchema["properties"]["input"]["description"]
    assert write.inputSchema["properties"]["wait_ms"]["default"] == 1000
    assert "escape sequences" in (tools["shell_open"].description or "")
    assert set(write.outputSchema["properties"]) == {  # type: ignore[index]
        "shell_id",
        "output",
        "truncated",
        "exited",
        "exit_code",
        "signal",
    }


async def test_unknown_signal_is_a_tool_error(connect: Any) -> None:
    async with connect("full") as client:
        sandbox_id = (await call(client, "sandbox_create"))["sandbox_id"]
        text = await call_error(
            client, "shell_signal", sandbox_id=sandbox_id, shell_id="sh-0", signal="NOPE"
        )
    assert "unknown signal 'NOPE'" in text


async def test_core_tools_change_the_sandbox(connect: Any, fake: FakeBackend) -> None:
    fake.script_exec("cat /work/a.txt", stdout="hello\n")
    async with connect("core") as client:
        created = await call(client, "sandbox_create", image="python", memory_mib=512)
        sandbox_id = created["sandbox_id"]
        assert created["memory_mib"] == 512
        assert created["state"] == "running"

        written = await call(
            client,
            "sandbox_write_file",
            sandbox_id=sandbox_id,
            path="/work/a.txt",
            content="hello\n",
        )
        assert written == {"path": "/work/a.txt", "size_bytes": 6}
        read = await call(client, "sandbox_read_file", sandbox_id=sandbox_id, path="/work/a.txt")
        assert read == {"path": "/work/a.txt", "content": "hello\n", "size_bytes": 6}
        listing = await call(client, "sandbox_list_dir", sandbox_id=sandbox_id, path="/work")
        assert [(e["name"], e["type"]) for e in listing["entries"]] == [("a.txt", "file")]

        ran = await call(
            client, "sandbox_exec", sandbox_id=sandbox_id, command="cat /work/a.txt", cwd="/work"
        )
        assert (ran["exit_code"], ran["stdout"], ran["timed_out"]) == (0, "hello\n", False)
        assert fake.exec_calls[-1].cwd == "/work"

        deleted = await call(client, "sandbox_delete", sandbox_id=sandbox_id)
        assert deleted == {"sandbox_id": sandbox_id, "deleted": True}
    assert fake.sandbox_ids == []


async def test_guest_failures_are_results(connect: Any, fake: FakeBackend) -> None:
    fake.script_exec("false", exit_code=1, stderr="failed\n")
    fake.script_exec("sleep 9", exit_code=None, timed_out=True)
    async with connect("core") as client:
        sandbox_id = (await call(client, "sandbox_create"))["sandbox_id"]
        failed = await call(client, "sandbox_exec", sandbox_id=sandbox_id, command="false")
        assert (failed["exit_code"], failed["stderr"]) == (1, "failed\n")
        slow = await call(
            client, "sandbox_exec", sandbox_id=sandbox_id, command="sleep 9", timeout_s=1
        )
        assert (slow["exit_code"], slow["timed_out"]) == (None, True)


async def test_missing_file_and_unknown_sandbox_are_tool_errors(connect: Any) -> None:
    async with connect("core") as client:
        sandbox_id = (await call(client, "sandbox_create"))["sandbox_id"]
        text = await call_error(client, "sandbox_read_file", sandbox_id=sandbox_id, path="/nope")
        assert f"no such file or directory: /nope in sandbox {sandbox_id}" in text
        text = await call_error(client, "sandbox_list_dir", sandbox_id=sandbox_id, path="/nope")
        assert "no such file or directory: /nope" in text

        await call(client, "sandbox_delete", sandbox_id=sandbox_id)
        # The handle was cached; the sandbox is gone all the same.
        text = await call_error(client, "sandbox_exec", sandbox_id=sandbox_id, command="true")
        assert f"sandbox {sandbox_id} not found" in text
        text = await call_error(client, "sandbox_delete", sandbox_id="sb-unknown")
        assert "sandbox sb-unknown not found" in text


async def test_binary_file_is_a_tool_error_not_mangled_text(
    connect: Any, fake: FakeBackend
) -> None:
    async with connect("core") as client:
        sandbox_id = (await call(client, "sandbox_create"))["sandbox_id"]
        sandbox = await AsyncSandbox.connect(sandbox_id, api_key=fake.api_key, transport=fake)
        await sandbox.files.write("/bin.dat", b"\xff\xfe\x00")
        await sandbox.aclose()
        text = await call_error(client, "sandbox_read_file", sandbox_id=sandbox_id, path="/bin.dat")
        assert "is not UTF-8 text (3 bytes)" in text


async def test_api_errors_are_tool_errors(connect: Any, fake: FakeBackend) -> None:
    async with connect("core") as client:
        fake.fail_next(500, "internal", "disk full")
        text = await call_error(client, "sandbox_create")
        assert "disk full" in text


async def test_full_profile_tools(connect: Any, fake: FakeBackend) -> None:
    async with connect("full") as client:
        sandbox_id = (await call(client, "sandbox_create"))["sandbox_id"]
        listed = await call(client, "sandbox_list", state="running")
        assert [s["sandbox_id"] for s in listed["sandboxes"]] == [sandbox_id]
        kept = await call(client, "sandbox_keep_alive", sandbox_id=sandbox_id, timeout_s=600)
        assert kept["sandbox_id"] == sandbox_id

        await call(client, "sandbox_mkdir", sandbox_id=sandbox_id, path="/w/d")
        await call(client, "sandbox_write_file", sandbox_id=sandbox_id, path="/w/d/f", content="x")
        stat = await call(client, "sandbox_stat", sandbox_id=sandbox_id, path="/w/d/f")
        assert (stat["type"], stat["size_bytes"]) == ("file", 1)
        moved = await call(client, "sandbox_rename", sandbox_id=sandbox_id, src="/w/d", dst="/w/e")
        assert moved == {"path": "/w/e"}
        text = await call_error(
            client, "sandbox_remove", sandbox_id=sandbox_id, path="/w/d", recursive=True
        )
        assert "no such file or directory: /w/d" in text
        await call(client, "sandbox_remove", sandbox_id=sandbox_id, path="/w/e", recursive=True)
        text = await call_error(client, "sandbox_stat", sandbox_id=sandbox_id, path="/w/e/f")
        assert "no such file or directory" in text

        await call(client, "sandbox_exec", sandbox_id=sandbox_id, command="true")
        processes = await call(client, "sandbox_processes", sandbox_id=sandbox_id)
        assert [p["argv"] for p in processes["processes"]] == [["/bin/sh", "-c", "true"]]


async def test_full_profile_fork_snapshot_hibernate_resume(connect: Any, fake: FakeBackend) -> None:
    fake.script_exec("cat /w/f", stdout="x")
    async with connect("full") as client:
        sandbox_id = (await call(client, "sandbox_create"))["sandbox_id"]
        await call(client, "sandbox_write_file", sandbox_id=sandbox_id, path="/w/f", content="x")

        forked = await call(client, "sandbox_fork", sandbox_id=sandbox_id, count=2)
        assert forked["source_sandbox_id"] == sandbox_id and len(forked["sandboxes"]) == 2
        clone = forked["sandboxes"][0]
        assert clone["forked_from"] == sandbox_id
        read = await call(client, "sandbox_read_file", sandbox_id=clone["sandbox_id"], path="/w/f")
        assert read["content"] == "x"

        # `name` is call()'s own parameter, so this one goes through call_tool.
        saved = await client.call_tool(
            "sandbox_snapshot", {"sandbox_id": sandbox_id, "name": "base"}
        )
        assert not saved.isError and saved.structuredContent is not None
        snap = saved.structuredContent
        assert (snap["sandbox_id"], snap["name"], snap["keep"]) == (sandbox_id, "base", False)
        listed = await call(client, "sandbox_list_snapshots", sandbox_id=sandbox_id)
        assert [s["snapshot_id"] for s in listed["snapshots"]] == [snap["snapshot_id"]]
        restored = await call(client, "sandbox_create", snapshot=snap["snapshot_id"])
        assert restored["from_snapshot"] == snap["snapshot_id"]

        hibernated = await call(client, "sandbox_hibernate", sandbox_id=sandbox_id)
        assert hibernated["state"] == "hibernated"
        text = await call_error(client, "sandbox_fork", sandbox_id=sandbox_id)
        assert f"sandbox {sandbox_id} is not running" in text
        ran = await call(client, "sandbox_exec", sandbox_id=sandbox_id, command="cat /w/f")
        assert ran["stdout"] == "x"  # the exec resumed it
        await call(client, "sandbox_hibernate", sandbox_id=sandbox_id)
        resumed = await call(client, "sandbox_resume", sandbox_id=sandbox_id)
        assert resumed["state"] == "running"

        fake.fail_next(500, "snapshot_failed", "the saved state is corrupt")
        text = await call_error(client, "sandbox_resume", sandbox_id=sandbox_id)
        assert "saved state unusable" in text and "corrupt" in text

        deleted = await call(client, "sandbox_delete_snapshot", snapshot_id=snap["snapshot_id"])
        assert deleted == {"snapshot_id": snap["snapshot_id"], "deleted": True}
        text = await call_error(client, "sandbox_delete_snapshot", snapshot_id=snap["snapshot_id"])
        assert "snapshot not found" in text
        text = await call_error(client, "sandbox_create", snapshot=snap["snapshot_id"])
        assert "snapshot not found" in text


async def test_create_takes_the_egress_policy_and_network_shows_it(
    connect: Any, fake: FakeBackend
) -> None:
    async with connect("full") as client:
        created = await call(
            client,
            "sandbox_create",
            allow=["pypi.org"],
            deny=["0.0.0.0/0"],
            profile="openai",
        )
        sandbox_id = created["sandbox_id"]
        assert fake.network_of(sandbox_id) == {
            "allow": ["pypi.org"],
            "deny": ["0.0.0.0/0"],
            "profile": "openai",
        }
        network = await call(client, "sandbox_network", sandbox_id=sandbox_id)
        assert network == {
            "sandbox_id": sandbox_id,
            "profile": "openai",
            "allow": ["pypi.org"],
            "deny": ["0.0.0.0/0"],
            "secrets": [],
            "dropped_packets": 0,
        }
        text = await call_error(client, "sandbox_create", profile="nope")
        assert "known profiles" in text


async def test_secrets_come_from_the_server_never_the_model(fake: FakeBackend) -> None:
    secret = Secret(name="OPENAI_API_KEY", value="sk-server", upstream="https://api.openai.com/v1")
    server = build_server(
        "full",
        client_factory=lambda: AsyncClient(api_key=fake.api_key, transport=fake),
        secrets=[secret],
    )
    async with create_connected_server_and_client_session(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert "secrets" not in tools["sandbox_create"].inputSchema["properties"]
        sandbox_id = (await call(client, "sandbox_create"))["sandbox_id"]
        sent = fake.network_of(sandbox_id)
        assert sent is not None and sent["secrets"][0]["value"] == "sk-server"
        network = await call(client, "sandbox_network", sandbox_id=sandbox_id)
        assert network["secrets"] == ["OPENAI_API_KEY -> https://api.openai.com/v1"]
        assert "sk-server" not in str(network)
