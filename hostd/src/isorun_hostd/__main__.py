"""``isorun-hostd``: the developer CLI of the host daemon.

```
isorun-hostd run IMAGE [options] -- CMD [ARG...]   boot, stream output, exit with CMD's status
isorun-hostd doctor                                what this host offers VMs, and why
isorun-hostd serve [--host H] [--port N]           the node API (spec/node.md) for a backend
isorun-hostd audit verify [--state-dir DIR]        check the audit chain offline (docs/audit.md)
```
``serve`` needs ``ISORUN_NODE_TOKEN``; its VMs die with it (PDEATHSIG), and the next start
removes their run folders.
``audit verify`` exits 0 when the chain is intact and 1 naming the first bad entry otherwise.
Exit status of ``run``: the command's own, 128+N when a signal N killed it, 124 when it timed
out, 125 when isorun itself failed (bad image, VM did not boot); the reason goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from isorun_hostd.agent_channel import Channel, ChannelError, Process
from isorun_hostd.api import create_app
from isorun_hostd.audit import AuditError, load_key, verify_folder
from isorun_hostd.audit.chain import CHAIN_FILE, KEY_FILE
from isorun_hostd.config import Settings
from isorun_hostd.images import ImageError, PullProgress
from isorun_hostd.sandboxes import Runtime
from isorun_hostd.vm import VMError

EXIT_TIMEOUT = 124
EXIT_ISORUN_FAILED = 125


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return asyncio.run(_until_signalled(args))
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


async def _until_signalled(args: argparse.Namespace) -> int:
    """Run the command; SIGTERM or SIGHUP cancel it, so its cleanup still runs."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop, signum)
    try:
        status: int = await args.handler(args, Settings())
    except asyncio.CancelledError:
        if not received:
            raise
        return 128 + received[0]
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="isorun-hostd", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a command in a fresh microVM of IMAGE")
    run.add_argument("image", help="pinned reference: NAME:TAG or NAME@sha256:DIGEST")
    run.add_argument("command", nargs="+", help="the command and its arguments (after --)")
    run.add_argument("--vcpus", type=int, default=1)
    run.add_argument("--mem-mib", type=int, default=256)
    run.add_argument("--timeout", type=float, default=0, help="seconds; 0 for none")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("-w", "--workdir")
    run.add_argument("-u", "--user")
    run.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    run.set_defaults(handler=_run)

    doctor = commands.add_parser("doctor", help="show the accelerator choice and boot files")
    doctor.set_defaults(handler=_doctor)

    serve = commands.add_parser("serve", help="serve the node API to a backend")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7070)
    serve.set_defaults(handler=_serve)

    audit = commands.add_parser("audit", help="the audit chain, read from disk")
    audit_commands = audit.add_subparsers(required=True, metavar="COMMAND")
    audit_verify = audit_commands.add_parser(
        "verify", help="check every entry; name the first altered, removed or reordered one"
    )
    audit_verify.add_argument(
        "--state-dir", type=Path, help="default: ISORUN_STATE_DIR or /var/lib/isorun"
    )
    audit_verify.add_argument(
        "--key", type=Path, help="default: ISORUN_AUDIT_KEY_FILE or <state dir>/audit/key"
    )
    audit_verify.set_defaults(handler=_audit_verify)
    return parser


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            return _fail(f"--env {item!r} is not KEY=VALUE")
        env[key] = value
    # One sandbox, then exit: a template would cost a boot, a save and a restore for nothing.
    runtime = Runtime(settings.model_copy(update={"templates": False}))
    try:
        await runtime.start()
        sandbox = await runtime.create(
            args.image, vcpus=args.vcpus, mem_mib=args.mem_mib, progress=_ProgressPrinter()
        )
        process = await sandbox.exec(
            args.command,
            env=env,
            cwd=args.workdir,
            user=args.user,
            stdin=args.interactive,
            timeout_s=args.timeout,
        )
        if args.interactive:
            asyncio.create_task(_bg_forward_stdin(process))  # noqa: RUF006 (ends with the run)
        async for chunk in process.output():
            out = sys.stdout.buffer if chunk.channel == Channel.STDOUT else sys.stderr.buffer
            out.write(chunk.data)
            out.flush()
        end = await process.wait()
    except (ImageError, VMError, ChannelError, AuditError, ValueError) as exc:
        return _fail(str(exc))
    finally:
        await runtime.aclose()
    if end.timed_out:
        print(f"isorun-hostd: command timed out after {args.timeout:g} s", file=sys.stderr)
        return EXIT_TIMEOUT
    if end.signal is not None:
        return 128 + end.signal
    assert end.exit_code is not None
    return end.exit_code


async def _bg_forward_stdin(process: Process) -> None:
    loop = asyncio.get_running_loop()
    try:
        stdin = sys.stdin.fileno()
        while data := await loop.run_in_executor(None, os.read, stdin, 65536):
            await process.write_stdin(data)
        await process.close_stdin()
    except ChannelError:
        return


async def _doctor(_args: argparse.Namespace, settings: Settings) -> int:
    runtime = Runtime(settings)
    try:
        await runtime.start()
    except (VMError, AuditError, FileNotFoundError) as exc:
        return _fail(str(exc))
    caps = runtime.caps
    boot = runtime.boot
    print(f"qemu          {caps.qemu_binary} {caps.qemu_version}")
    print(f"accelerator   {caps.accel.upper()}: {caps.accel_reason}")
    print(f"guest kernel  {boot.kernel_release} ({boot.kernel})")
    print(f"initramfs     {boot.initramfs}")
    print(f"agent         {settings.agent_path}")
    print(f"state         {settings.state_dir}")
    print(f"run           {settings.run_dir}")
    return 0


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if settings.node_token is None or not settings.node_token.get_secret_value():
        return _fail("serve needs ISORUN_NODE_TOKEN: the token the backend presents")
    runtime = Runtime(settings)
    try:
        await runtime.start()
        app = create_app(runtime, settings.node_token.get_secret_value())
        server = uvicorn.Server(
            uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
        )
        await server.serve()
    except (VMError, AuditError, FileNotFoundError) as exc:
        return _fail(str(exc))
    finally:
        await runtime.aclose()
    return 0


async def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Read the key, chain and head directly: works while hostd runs, and without it."""
    folder = (args.state_dir or settings.state_dir) / "audit"
    key_path = args.key or settings.audit_key_file or folder / KEY_FILE
    try:
        key = load_key(key_path, create=False)
        report = await asyncio.to_thread(verify_folder, folder, key)
    except (AuditError, OSError) as exc:
        return _fail(str(exc))
    if report.first_bad is None:
        print(f"audit chain intact: {report.checked} entries ({folder / CHAIN_FILE})")
        return 0
    bad = report.first_bad
    print(f"entry {bad.seq}: {bad.reason}: {bad.detail}")
    print(f"{report.checked} entries before it chain correctly ({folder / CHAIN_FILE})")
    return 1


class _ProgressPrinter:
    """Prints a line per phase and layer, and at each quarter of a layer's bytes."""

    def __init__(self) -> None:
        self._last: tuple[str, int | None, int] | None = None

    def __call__(self, p: PullProgress) -> None:
        quarter = p.bytes_done * 4 // p.bytes_total if p.bytes_total else 0
        key = (p.phase, p.layer_index, quarter)
        if key == self._last:
            return
        self._last = key
        where = f" layer {p.layer_index + 1}/{p.layer_count}" if p.layer_index is not None else ""
        amount = f" {p.bytes_done / 1e6:.1f}/{p.bytes_total / 1e6:.1f} MB" if p.bytes_total else ""
        print(f"isorun-hostd: {p.phase}{where}{amount}", file=sys.stderr)


def _fail(message: str) -> int:
    print(f"isorun-hostd: error: {message}", file=sys.stderr)
    return EXIT_ISORUN_FAILED


if __name__ == "__main__":
    sys.exit(main())
