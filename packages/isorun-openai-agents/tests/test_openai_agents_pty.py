"""PTY sessions of `IsorunSandboxSession` over isorun shells, in a real VM: the SDK's
`pty_exec_start` / `pty_write_stdin` / `pty_terminate_all` directly, and through an agent whose
scripted model starts `python3 -i` with `exec_command(tty=true)` and types into it."""

from __future__ import annotations

import re

import isorun
import pytest
from agents import RunConfig, Runner
from agents.run_config import SandboxRunConfig
from agents.sandbox import SandboxAgent
from agents.sandbox.capabilities import Shell
from agents.sandbox.errors import PtySessionNotFoundError
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call
from isorun_openai_agents import (
    IsorunSandboxClient,
    IsorunSandboxClientOptions,
    IsorunSandboxSession,
)

from tests.framework.isorun_up import Up

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

# The basic REPL: no colours or redraws between the echoed characters.
PYTHON = "PYTHON_BASIC_REPL=1 python3 -i"
TICKS = "for i in $(seq 1 1000); do echo tick-$i; sleep 0.2; done"


def tool_outputs(call: ModelCall) -> dict[str, str]:
    """The tool results in one model call's input, by call id."""
    outputs: dict[str, str] = {}
    for item in call.input if isinstance(call.input, list) else []:
        if isinstance(item, dict) and str(item.get("type", "")).endswith("call_output"):
            outputs[item["call_id"]] = str(item["output"])
    return outputs


async def test_pty_sessions_on_the_session(isorun_api: Up) -> None:
    client = IsorunSandboxClient(api_url=isorun_api.url, api_key=isorun_api.key)
    session = await client.create(options=IsorunSandboxClientOptions(image="python"))
    inner = session._inner
    assert isinstance(inner, IsorunSandboxSession)
    sb = inner.sandbox
    async with session:
        assert session.supports_pty()

        # A loop on a terminal: still running after the yield, with a session id.
        first = await session.pty_exec_start(TICKS, tty=True, yield_time_s=3)
        assert first.process_id is not None and first.exit_code is None
        assert b"tick-1\r\n" in first.output, first.output
        ticks = await session.pty_write_stdin(session_id=first.process_id, chars="")
        assert ticks.process_id == first.process_id and b"tick-" in ticks.output
        # Ctrl-C ends it: the status is reported once and the session id is dropped.
        stopped = await session.pty_write_stdin(
            session_id=first.process_id, chars="\x03", yield_time_s=10
        )
        assert (stopped.process_id, stopped.exit_code) == (None, 130), stopped
        with pytest.raises(PtySessionNotFoundError):
            await session.pty_write_stdin(session_id=first.process_id, chars="x")

        # An interactive program gets what is typed and echoes it.
        repl = await session.pty_exec_start(PYTHON, tty=True, yield_time_s=20)
        assert repl.process_id is not None and b">>> " in repl.output, repl.output
        answer = await session.pty_write_stdin(
            session_id=repl.process_id, chars="print(6 * 7)\n", yield_time_s=10
        )
        assert b"print(6 * 7)" in answer.output and b"42" in answer.output, answer.output
        ended = await session.pty_write_stdin(
            session_id=repl.process_id, chars="raise SystemExit(5)\n", yield_time_s=10
        )
        assert (ended.process_id, ended.exit_code) == (None, 5), ended

        # Without a tty: pipes (both streams), and no stdin to write to.
        piped = await session.pty_exec_start("echo out; echo err >&2; exit 3", yield_time_s=10)
        assert (piped.process_id, piped.exit_code) == (None, 3), piped
        assert b"out\n" in piped.output and b"err\n" in piped.output
        background = await session.pty_exec_start("sleep 1000", yield_time_s=0.5)
        assert background.process_id is not None
        with pytest.raises(RuntimeError, match="stdin is not available"):
            await session.pty_write_stdin(session_id=background.process_id, chars="x")

        # pty_terminate_all hangs up every shell and kills every piped process.
        sleeper = await session.pty_exec_start("sleep 1000", tty=True, yield_time_s=0.5)
        assert sleeper.process_id is not None
        shell_ids = {s.id for s in await sb.shells.list() if s.running}
        assert shell_ids, "the tty session's shell is running"
        await session.pty_terminate_all()
        assert not [s for s in await sb.shells.list() if s.id in shell_ids and s.running]
        sleeps = [p for p in await sb.processes() if "sleep 1000" in " ".join(p.argv)]
        assert sleeps and not [p for p in sleeps if p.running], sleeps
        for process_id in (sleeper.process_id, background.process_id):
            with pytest.raises(PtySessionNotFoundError):
                await session.pty_write_stdin(session_id=process_id, chars="")
    await client.delete(session)


async def test_agent_types_into_an_interactive_python(isorun_api: Up) -> None:
    def write_stdin(call: ModelCall) -> ModelStep:
        started = tool_outputs(call)["start"]
        match = re.search(r"Process running with session ID (\d+)", started)
        assert match, started
        args = {"session_id": int(match[1]), "chars": "print(6 * 7)\n", "yield_time_ms": 10_000}
        return ModelStep(output=[function_call("write_stdin", args, call_id="type")])

    model = ScriptedModel(
        [
            [
                function_call(
                    "exec_command",
                    {"cmd": PYTHON, "tty": True, "yield_time_ms": 20_000},
                    call_id="start",
                )
            ],
            ModelStep.respond(write_stdin),
            [assistant_message("done")],
        ]
    )
    agent = SandboxAgent(name="repl", instructions="work", model=model, capabilities=[Shell()])
    client = IsorunSandboxClient(api_url=isorun_api.url, api_key=isorun_api.key)
    session = await client.create(options=IsorunSandboxClientOptions(image="python"))
    inner = session._inner
    assert isinstance(inner, IsorunSandboxSession)
    async with session:
        result = await Runner.run(
            agent,
            "compute 6 * 7 in an interactive python",
            run_config=RunConfig(
                sandbox=SandboxRunConfig(client=client, session=session), tracing_disabled=True
            ),
        )
        assert result.final_output == "done"
        model.assert_complete()
        outputs = tool_outputs(model.calls[-1])
        assert ">>> " in outputs["start"], outputs["start"]
        assert "print(6 * 7)" in outputs["type"] and "42" in outputs["type"], outputs["type"]
        assert "Process running with session ID" in outputs["type"]
        # The session still holds its shell: leaving it hangs the shell up before the VM goes.
        assert [s for s in await inner.sandbox.shells.list() if s.running]
    await client.delete(session)


def test_isorun_exports_what_the_session_reads() -> None:
    # The reader tasks match on these; a rename in isorun must fail here, not in a VM.
    for name in ("AsyncTerminal", "ShellExit", "StartEvent", "OutputEvent", "ExitEvent"):
        assert hasattr(isorun, name)
