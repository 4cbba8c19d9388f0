"""One microVM: its run folder, its QEMU process, its QMP session and its agent channel.

```
start():  mkdir run/<id> ─► QEMU ─► QMP up ─► agent handshake ─► RUNNING
             any failure on the way ─► destroy() ─► error naming the cause (QEMU log, console)
start(restore=F): the same QEMU argv plus -S -incoming defer ─► load F ─► cont ─► agent
launch_incoming(): that QEMU started ahead (INCOMING); a later start(restore=F) goes on from it
save_template(F): quiesce ─► x-ignore-shared ─► stop ─► device state to F (RAM stays in its file)
save(F):  quiesce the channel ─► stop ─► state to F ─► cont (or stay paused for a hibernate)
destroy(): close channel ─► QMP quit (or SIGKILL) ─► reap ─► rm -r run/<id> ─► close slot
```
A VM with a NIC gets a network slot (``net.apply.Slot``: namespace, tap, veth, ruleset) just
before its QEMU starts inside that namespace, and gives it back once QEMU is reaped. Apart from
the slot, nothing a VM creates lives outside its run folder (the image disk is shared and
read-only), so removing both after the process is reaped leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

from qemu.qmp import QMPError

from isorun_hostd.agent_channel import AgentChannel, ChannelError
from isorun_hostd.net.apply import Slot
from isorun_hostd.vm import process, snapshot
from isorun_hostd.vm.bootfiles import BootFiles
from isorun_hostd.vm.capabilities import HostCapabilities
from isorun_hostd.vm.cmdline import RunPaths, VMSpec, build_argv
from isorun_hostd.vm.console import ConsoleRing
from isorun_hostd.vm.errors import BootTimeout, LaunchError, SnapshotError
from isorun_hostd.vm.qmp import QMP
from isorun_hostd.vm.state import StateMachine, VMState

log = logging.getLogger(__name__)

QUIT_WAIT_S = 1.0
# A run folder without a pid file may belong to a VM being created right now.
STALE_WITHOUT_PID_S = 60.0
QMP_CONNECT_TIMEOUT_S = 10.0
# A save or load moves the guest's RAM once; a few seconds even for GiBs on a slow disk.
MIGRATION_TIMEOUT_S = 120.0


class SlotSource(Protocol):
    async def open_slot(self) -> Slot:
        """A fresh namespace for one VM, its ruleset in force (locked down until bound)."""
        ...


class MicroVM:
    """A QEMU microVM with the isorun agent as PID 1.

    Example:
        vm = MicroVM(VMSpec("vm-1", disk=disk), caps, boot_files, run_root)
        await vm.start(timeout_s=60)
        process = await vm.channel.exec(ExecRequest(argv=["true"]))
        await vm.destroy()
    """

    def __init__(
        self,
        spec: VMSpec,
        caps: HostCapabilities,
        boot: BootFiles,
        run_root: Path,
        network: SlotSource | None = None,
    ) -> None:
        if spec.nic and network is None:
            raise ValueError(f"VM {spec.vm_id} has a NIC: give it a network to take a slot from")
        self.spec = spec
        self.caps = caps
        self.paths = RunPaths(run_root / spec.vm_id)
        self._argv = build_argv(spec, caps, boot, self.paths)
        self.state = StateMachine(spec.vm_id)
        self._network = network
        self.slot: Slot | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._qmp: QMP | None = None
        self._channel: AgentChannel | None = None
        self._console_task: asyncio.Task[None] | None = None
        self.console = ConsoleRing()
        self.boot_ms = 0.0
        # Where start()'s time went, in order: launch (QEMU exec -> QMP up; 0 when launched in
        # advance), load, cont, agent (handshake). For benchmarks and logs.
        self.spans_ms: dict[str, float] = {}

    @property
    def channel(self) -> AgentChannel:
        self.state.require(VMState.RUNNING)
        assert self._channel is not None
        return self._channel

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        """Running, as far as hostd knows: RUNNING and QEMU not seen to exit."""
        return (
            self.state.state is VMState.RUNNING
            and self._process is not None
            and self._process.returncode is None
        )

    @property
    def waiting(self) -> bool:
        """Launched for a restore (``launch_incoming``) and QEMU not seen to exit."""
        return (
            self.state.state is VMState.INCOMING
            and self._process is not None
            and self._process.returncode is None
        )

    async def start(
        self, *, timeout_s: float, restore: Path | None = None, ignore_shared: bool = False
    ) -> None:
        """Boot and wait for the agent, or with ``restore`` continue the VM saved in that file
        (by ``save`` of a VM with the same spec, boot files and host capabilities; with
        ``ignore_shared`` by ``save_template`` of this VM's template).

        Raises:
            LaunchError: QEMU failed or exited while booting.
            BootTimeout: the agent did not answer in time.
            SnapshotError: ``restore`` is missing, corrupt or from a VM of another shape.
        Either way, nothing of the VM is left behind.
        """
        launched = self.state.state is VMState.INCOMING
        if launched and restore is None:
            raise ValueError(f"VM {self.spec.vm_id} was launched for a restore; give it one")
        self.state.move(VMState.BOOTING)
        started = mark = time.perf_counter()

        def span(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            self.spans_ms[name] = (now - mark) * 1000
            mark = now

        try:
            if not launched:
                await self._launch(incoming=restore is not None)
            span("launch")
            if restore is not None:
                await self._load(restore, ignore_shared=ignore_shared)
                span("load")
                assert self._qmp is not None
                await self._qmp.execute("cont")
                span("cont")
            # Every save is quiesced (protocol.md section 3, item 5): a restore needs no flush.
            self._channel = await self._connect_agent(timeout_s)
            span("agent")
        except BaseException as exc:
            await self._fail(exc, timeout_s)
        self.boot_ms = (time.perf_counter() - started) * 1000
        self.state.move(VMState.RUNNING)

    async def launch_incoming(self) -> None:
        """Start QEMU with ``-S -incoming defer`` and wait for QMP, ahead of a later
        ``start(restore=...)`` that then skips QEMU's start (a pre-started restore target).

        Raises:
            LaunchError: QEMU failed or exited. Nothing of the VM is left behind.
        """
        self.state.move(VMState.LAUNCHING)
        try:
            await self._launch(incoming=True)
        except BaseException as exc:
            await self._fail(exc, QMP_CONNECT_TIMEOUT_S)
        self.state.move(VMState.INCOMING)

    async def _launch(self, *, incoming: bool) -> None:
        argv = [*self._argv, "-S", "-incoming", "defer"] if incoming else self._argv
        self.paths.root.mkdir(parents=True, exist_ok=False)
        if self._network is not None and self.spec.nic:
            self.slot = await self._network.open_slot()
            argv = [*self.slot.nsenter, *argv]
        self._process = await process.launch(argv, self.paths.root / "qemu.log")
        self.paths.pid_file.write_text(str(self._process.pid))
        assert self._process.stdout is not None
        self._console_task = asyncio.create_task(
            self.console.drain(self._process.stdout), name=f"console-{self.spec.vm_id}"
        )
        self._qmp = QMP(self.spec.vm_id)
        await asyncio.wait_for(
            self._qmp.connect(self.paths.qmp, self._process), QMP_CONNECT_TIMEOUT_S
        )

    async def _fail(self, exc: BaseException, timeout_s: float) -> NoReturn:
        error = self._boot_error(exc, timeout_s)
        self.state.move(VMState.FAILED)
        await self.destroy()
        if error is exc:
            raise exc
        raise error from exc

    async def reconnect(self, *, timeout_s: float) -> AgentChannel:
        """Drop the agent channel and open a new session, as a restarted hostd would.

        Processes keep running in the guest; attach to them on the new channel.
        """
        self.state.require(VMState.RUNNING)
        if self._channel is not None:
            await self._channel.aclose()
        self._channel = await AgentChannel.connect(
            self.paths.agent, timeout_s=timeout_s, reconnect=True
        )
        return self._channel

    async def _load(self, state_file: Path, *, ignore_shared: bool) -> None:
        assert self._qmp is not None and self._process is not None
        try:
            await snapshot.load(
                self._qmp,
                self._process,
                state_file,
                timeout_s=MIGRATION_TIMEOUT_S,
                ignore_shared=ignore_shared,
            )
        except FileNotFoundError as exc:
            raise SnapshotError(
                f"VM {self.spec.vm_id}: restore failed: the state file {state_file} is missing"
            ) from exc
        except snapshot.MigrationFailed as exc:
            qemu_log = process.tail(self.paths.root / "qemu.log")
            raise SnapshotError(
                f"VM {self.spec.vm_id}: restore failed: {exc}; the state file {state_file} is "
                f"corrupt, truncated or from a VM of another shape; qemu: {qemu_log or '(none)'}"
            ) from exc

    async def save(self, state_file: Path, *, keep_running: bool, durable: bool = True) -> int:
        """Write the VM's state to ``state_file`` (which must not exist); return its size.

        The guest is paused for the save. With ``keep_running`` it then continues; without,
        it stays paused for the caller to destroy (a hibernate). Without ``durable`` the file is
        not fsynced (a transient stream). On failure the VM continues, unharmed, and no partial
        file is left.

        Raises:
            SnapshotError: the state could not be written (disk full, I/O error).
            StateError: the VM is not running.
        """
        self.state.require(VMState.RUNNING)
        assert self._qmp is not None and self._channel is not None
        qmp = self._qmp
        try:
            async with self._channel.quiesced():
                try:
                    size = await snapshot.save(
                        qmp, state_file, timeout_s=MIGRATION_TIMEOUT_S, durable=durable
                    )
                except BaseException:
                    with contextlib.suppress(QMPError, OSError, EOFError):
                        await qmp.execute("cont")
                    raise
                if keep_running:
                    await qmp.execute("cont")
        except (snapshot.MigrationFailed, OSError, QMPError, EOFError, ChannelError) as exc:
            raise SnapshotError(
                f"VM {self.spec.vm_id}: save failed: {exc or type(exc).__name__}"
            ) from exc
        return size

    async def save_template(self, state_file: Path) -> int:
        """Save this template VM's device state to ``state_file`` and stop it; return the size.

        The VM must run with ``mem_shared``: its RAM stays in ``spec.mem_path``, which clones
        map privately. It stays paused; destroy it next, since a template's RAM file must never
        change once a clone maps it.

        Raises:
            SnapshotError: the state could not be written.
            StateError: the VM is not running.
        """
        self.state.require(VMState.RUNNING)
        assert self._qmp is not None and self._channel is not None
        if not self.spec.mem_shared:
            raise ValueError(f"VM {self.spec.vm_id} has no shared RAM file to template from")
        try:
            async with self._channel.quiesced():
                return await snapshot.save(
                    self._qmp, state_file, timeout_s=MIGRATION_TIMEOUT_S, ignore_shared=True
                )
        except (snapshot.MigrationFailed, OSError, QMPError, EOFError, ChannelError) as exc:
            raise SnapshotError(
                f"VM {self.spec.vm_id}: template save failed: {exc or type(exc).__name__}"
            ) from exc

    async def _connect_agent(self, timeout_s: float) -> AgentChannel:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.returncode is not None:
                raise LaunchError(f"QEMU exited with status {self._process.returncode}")
            if self.paths.agent.exists():
                remaining = max(0.1, deadline - time.monotonic())
                try:
                    return await AgentChannel.connect(self.paths.agent, timeout_s=remaining)
                except ConnectionRefusedError:
                    pass  # bound but not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.005)

    def _boot_error(self, exc: BaseException, timeout_s: float) -> BaseException:
        vm_id = self.spec.vm_id
        if isinstance(exc, TimeoutError):
            console = self.console.tail()
            return BootTimeout(
                f"VM {vm_id}: the guest agent did not answer within {timeout_s:g} s; "
                f"last console lines:\n{console or '(none)'}"
            )
        if isinstance(exc, SnapshotError):
            return exc
        if isinstance(exc, LaunchError | ChannelError | OSError | QMPError):
            qemu_log = process.tail(self.paths.root / "qemu.log")
            console = self.console.tail()
            error = LaunchError(
                f"QEMU failed for VM {vm_id}: {exc}\n"
                f"qemu: {qemu_log or '(no output)'}\nconsole: {console or '(none)'}"
            )
            error.qemu_log = qemu_log
            return error
        return exc

    async def destroy(self) -> None:
        """Stop the VM and remove its run folder. Safe to call in any state, and again."""
        if self.state.state in (VMState.STOPPING, VMState.STOPPED):
            return
        self.state.move(VMState.STOPPING)
        if self._channel is not None:
            await self._channel.aclose()
        try:
            if self._qmp is not None:
                await self._quit(self._qmp)
            if self._process is not None:
                await process.kill(self._process)
        except TimeoutError:
            log.error("VM %s: QEMU (pid %s) did not exit after SIGKILL", self.spec.vm_id, self.pid)
        finally:
            if self._console_task is not None:
                self._console_task.cancel()
            shutil.rmtree(self.paths.root, ignore_errors=True)
            try:
                if self.slot is not None:
                    await self.slot.close()
            finally:
                self.state.move(VMState.STOPPED)

    async def _quit(self, qmp: QMP) -> None:
        with contextlib.suppress(QMPError, OSError, asyncio.TimeoutError, EOFError):
            await asyncio.wait_for(qmp.execute("quit"), QUIT_WAIT_S)
        with contextlib.suppress(QMPError, OSError, asyncio.TimeoutError, EOFError):
            await asyncio.wait_for(qmp.close(), QUIT_WAIT_S)

    async def query_status(self) -> str:
        """QEMU's run state (``running``, ``paused``, ...)."""
        self.state.require(VMState.RUNNING)
        assert self._qmp is not None
        reply = await self._qmp.execute("query-status")
        return str(reply["status"])

    async def translation(self) -> Translation | None:
        """What TCG has translated of the guest's code in this QEMU so far (its ``info jit``);
        None under KVM, which translates nothing. bench/ reports it to show how much of a
        restored guest's first steps, and of an idle clone's memory, is translation."""
        self.state.require(VMState.RUNNING)
        assert self._qmp is not None
        if self.caps.accel != "tcg":
            return None
        text = str(await self._qmp.execute("human-monitor-command", {"command-line": "info jit"}))
        blocks = re.search(r"^TB count\s+(\d+)", text, re.MULTILINE)
        code = re.search(r"^gen code size\s+(\d+)", text, re.MULTILINE)
        if blocks is None or code is None:
            return None
        return Translation(blocks=int(blocks.group(1)), code_bytes=int(code.group(1)))


@dataclass(frozen=True, slots=True)
class Translation:
    """TCG's translation cache: guest code blocks translated, host code generated for them."""

    blocks: int
    code_bytes: int


def remove_stale_run_dirs(run_root: Path) -> list[str]:
    """Remove run folders whose QEMU is gone (a hostd that was killed); return their names.

    QEMU dies with hostd (PR_SET_PDEATHSIG), but a killed hostd cannot remove the folders.
    """
    removed: list[str] = []
    if not run_root.is_dir():
        return removed
    for folder in run_root.iterdir():
        paths = RunPaths(folder)
        try:
            pid = int(paths.pid_file.read_text())
        except (OSError, ValueError):
            if time.time() - folder.stat().st_mtime < STALE_WITHOUT_PID_S:
                continue
            pid = 0
        if pid and _is_our_qemu(pid, folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def _is_our_qemu(pid: int, folder: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(folder).encode() in cmdline
