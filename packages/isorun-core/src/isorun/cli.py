"""`isorun`: run a local isorun, manage its keys, and drive sandboxes from the shell.

```
isorun up [--port N] [--data-dir DIR] [--local-images]   backend + embedded hostd + SQLite in DIR
isorun keys create|revoke KEY_ID|ls [--data-dir DIR]     the database directly (works while up runs)
isorun run IMAGE -- CMD [ARG...]     create, stream CMD's output, destroy; exit with CMD's status
isorun run --snapshot SNAP -- CMD    the same in a sandbox started from a snapshot
isorun create IMAGE [--timeout-s N]  create a sandbox that lives to its TTL; print its id
  run and create take --allow X --deny Y --profile P --secret NAME@UPSTREAM (_cli_network),
  before IMAGE: `isorun run --allow pypi.org python -- pip download x`
isorun network show ID | set ID ...  a sandbox's egress policy, secret names, packets refused
isorun exec ID -- CMD [ARG...]       the same in an existing sandbox
isorun shell ID [--attach SH | --list | --close SH | --command CMD]   a persistent shell, this
                                     terminal attached (Ctrl-] detaches; _cli_shell)
isorun ls | rm ID                    list / delete the key's sandboxes
isorun fork ID [-n N]                clone a running sandbox; prints the clones' ids
isorun snapshot create ID [--keep] [--name N] | ls [--sandbox ID] | rm SNAP
isorun hibernate ID | resume ID      to disk and back; prints the sandbox's state
isorun url ID PORT [--expires-in S] [--private] [--json]   a signed https URL to a server
                                     listening on PORT in the sandbox (its loopback will do)
isorun usage [--since T] [--until T] the key's tenant's metered vCPU/GiB seconds and cost
isorun audit show ID [--json]        a sandbox's audit entries (also once it is deleted)
isorun audit verify                  every node's audit chain; exit 1 naming the first bad entry
isorun doctor                        hostd's view of this host, and whether the API answers
```

`up` prints `ISORUN_API_URL=...` (and, on the first start of a data dir, `ISORUN_API_KEY=...`: a
new tenant's key, stored hashed and shown only this once) on stdout once the API answers, so
`eval`-ing its first lines configures a shell; everything else goes to stderr. It runs until
SIGINT or SIGTERM, then destroys its VMs, stops its registry and exits 0. With `--local-images`
(or `ISORUN_LOCAL_IMAGES=1`) the short name `python` is served from an image built here from
Debian packages (`isorun_backend.local_images`) instead of Docker Hub.

Pull progress: the API has no progress channel, so `up` pulls the short names' images into its
cache as soon as it is ready and prints that pull's progress on its own stderr (creates that
arrive meanwhile join the same pull), and `run` shows an elapsed-time line on a terminal while
its create is pending.

`up` and `keys` need the `isorun-backend` package and import it only when used; the other
commands are plain SDK calls, configured by `ISORUN_API_URL` and `ISORUN_API_KEY`. `run` and
`exec` exit with the command's status: 128+N when signal N killed it, 124 when it timed out,
125 when isorun itself failed (the reason on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pydantic

from isorun import _cli_network, _cli_shell
from isorun._async_sandbox import AsyncSandbox
from isorun._base import ApiRequest
from isorun._client import AsyncClient
from isorun._config import API_KEY_ENV, API_URL_ENV, DEFAULT_API_URL
from isorun._errors import AuthenticationError, IsorunError
from isorun._models import ExecEvent, ExitEvent, OutputEvent

if TYPE_CHECKING:
    from isorun_backend.core.config import BackendSettings
    from isorun_backend.storage import Database

EXIT_TIMEOUT = 124
EXIT_ISORUN_FAILED = 125
LOCAL_IMAGES_ENV = "ISORUN_LOCAL_IMAGES"
DEFAULT_PORT = 8080
DEFAULT_URL_LISTEN = "127.0.0.1:8443"
SPINNER_INTERVAL_S = 0.1
HEALTH_TIMEOUT_S = 5.0
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except IsorunError as exc:
        return _fail(str(exc))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isorun", description="isorun: sandboxes for AI agents, real microVMs"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the API, an embedded hostd and SQLite locally")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on")
    up.add_argument("--port", type=int, default=DEFAULT_PORT)
    _data_dir_option(up)
    up.add_argument(
        "--local-images",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get(LOCAL_IMAGES_ENV, "") not in ("", "0"),
        help=f"serve short image names from images built here (default: ${LOCAL_IMAGES_ENV})",
    )
    up.add_argument(
        "--dns-upstream",
        metavar="IP[:PORT]",
        help="the resolver the sandboxes' DNS proxy asks (default: the host's, from "
        "/etc/resolv.conf; same as $ISORUN_DNS_UPSTREAM)",
    )
    up.add_argument(
        "--urls",
        metavar="HOST:PORT|off",
        default=os.environ.get("ISORUN_URL_LISTEN", DEFAULT_URL_LISTEN),
        help="where the sandboxes' public URLs are served (TLS, HTTP/3 on UDP); off: none "
        f"(default: $ISORUN_URL_LISTEN or {DEFAULT_URL_LISTEN})",
    )
    up.set_defaults(handler=_up)

    keys = commands.add_parser("keys", help="API keys, straight from the database")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--name", default="cli")
    create.add_argument("--tenant", help="tenant id (default: the first tenant, made if none)")
    _data_dir_option(create)
    create.set_defaults(handler=_keys_create)
    revoke = key_commands.add_parser("revoke", help="revoke a key by id (key-...)")
    revoke.add_argument("key_id")
    _data_dir_option(revoke)
    revoke.set_defaults(handler=_keys_revoke)
    listing = key_commands.add_parser("ls", help="list keys (never the keys themselves)")
    _data_dir_option(listing)
    listing.set_defaults(handler=_keys_ls)

    _sandbox_commands(commands)
    commands.add_parser("ls", help="list sandboxes").set_defaults(handler=_ls)
    rm = commands.add_parser("rm", help="delete a sandbox")
    rm.add_argument("sandbox_id")
    rm.set_defaults(handler=_rm)
    _saved_state_commands(commands)
    usage = commands.add_parser("usage", help="metered vCPU and memory time, and its cost")
    usage.add_argument("--since", help="RFC 3339 time with a zone (default: the beginning)")
    usage.add_argument("--until", help="RFC 3339 time with a zone (default: now)")
    usage.set_defaults(handler=_usage)
    _url_command(commands)
    _audit_commands(commands)
    _cli_network.add_commands(commands)
    _cli_shell.add_commands(commands)
    commands.add_parser("doctor", help="check this host and the API").set_defaults(handler=_doctor)
    return parser


def _sandbox_commands(commands: Any) -> None:
    """run, create, exec."""
    run = commands.add_parser("run", help="create a sandbox, run a command in it, destroy it")
    run.add_argument("image", nargs="?", help="short name (python) or OCI reference")
    run.add_argument("--snapshot", help="start from this snapshot (snap-...) instead of an image")
    run.add_argument("--memory-mib", type=int, default=1024)
    run.add_argument("--vcpus", type=int, default=1)
    run.add_argument("--timeout", type=float, default=None, help="seconds the command may run")
    _cli_network.add_policy_options(run, create=True)
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    run.set_defaults(handler=_run)

    create_ = commands.add_parser("create", help="create a sandbox and print its id")
    create_.add_argument("image", help="short name (python) or OCI reference")
    create_.add_argument("--memory-mib", type=int, default=1024)
    create_.add_argument("--vcpus", type=int, default=1)
    create_.add_argument("--timeout-s", type=int, default=300, help="time to live (seconds)")
    _cli_network.add_policy_options(create_, create=True)
    create_.set_defaults(handler=_create)

    exec_ = commands.add_parser("exec", help="run a command in an existing sandbox")
    exec_.add_argument("sandbox_id")
    exec_.add_argument("--timeout", type=float, default=None, help="seconds the command may run")
    exec_.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    exec_.set_defaults(handler=_exec)


def _saved_state_commands(commands: Any) -> None:
    """fork, snapshot create|ls|rm, hibernate, resume."""
    fork = commands.add_parser("fork", help="clone a running sandbox; print the clones' ids")
    fork.add_argument("sandbox_id")
    fork.add_argument("-n", "--count", type=int, default=1, help="clones to make (1..16)")
    fork.set_defaults(handler=_fork)
    snapshot = commands.add_parser("snapshot", help="save sandboxes, list and delete snapshots")
    snapshot_commands = snapshot.add_subparsers(required=True, metavar="ACTION")
    save = snapshot_commands.add_parser("create", help="save a running sandbox; print its id")
    save.add_argument("sandbox_id")
    save.add_argument("--keep", action="store_true", help="keep it when the sandbox is deleted")
    save.add_argument("--name")
    save.set_defaults(handler=_snapshot_create)
    snapshots = snapshot_commands.add_parser("ls", help="list snapshots")
    snapshots.add_argument("--sandbox", help="only this sandbox's")
    snapshots.set_defaults(handler=_snapshot_ls)
    drop = snapshot_commands.add_parser("rm", help="delete a snapshot")
    drop.add_argument("snapshot_id")
    drop.set_defaults(handler=_snapshot_rm)
    for name, handler, what in (
        ("hibernate", _hibernate, "save a sandbox to disk and stop its VM"),
        ("resume", _resume, "bring a hibernated sandbox back"),
    ):
        command = commands.add_parser(name, help=what)
        command.add_argument("sandbox_id")
        command.set_defaults(handler=handler)


def _url_command(commands: Any) -> None:
    """url ID PORT [--expires-in S] [--private] [--json]."""
    url = commands.add_parser(
        "url", help="print a signed https URL to a server listening on a port of a sandbox"
    )
    url.add_argument("sandbox_id")
    url.add_argument("port", type=int, help="the port the server listens on in the sandbox")
    url.add_argument(
        "--expires-in", type=int, default=3600, metavar="SECONDS", help="default: 3600"
    )
    url.add_argument(
        "--private",
        action="store_true",
        help="requests also need an API key of the tenant in the X-Isorun-Key header",
    )
    url.add_argument("--json", action="store_true", help="url, origin, token, expires_at, ...")
    url.set_defaults(handler=_url)


def _audit_commands(commands: Any) -> None:
    """audit show ID [--json], audit verify."""
    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = audit.add_subparsers(required=True, metavar="ACTION")
    show = audit_commands.add_parser("show", help="a sandbox's audit entries, oldest first")
    show.add_argument("sandbox_id")
    show.add_argument("--json", action="store_true", help="one JSON entry a line, MACs included")
    show.set_defaults(handler=_audit_show)
    audit_commands.add_parser(
        "verify", help="verify every node's chain; exit 1 naming the first bad entry"
    ).set_defaults(handler=_audit_verify)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: $ISORUN_DATA_DIR or /var/lib/isorun"
    )


def _fail(message: str) -> int:
    print(f"isorun: error: {message}", file=sys.stderr)
    return EXIT_ISORUN_FAILED


def _log(message: str) -> None:
    print(f"isorun: {message}", file=sys.stderr, flush=True)


# -- up and keys: the backend, in this process ----------------------------------------------


class _Stopped(Exception):
    """SIGTERM arrived: unwind, so that VMs and the registry are stopped on the way out."""


def _raise_stopped(_signum: int, _frame: FrameType | None) -> None:
    raise _Stopped


def _backend_settings(data_dir: Path | None, **overrides: Any) -> BackendSettings:
    try:
        from isorun_backend.core.config import BackendSettings  # noqa: PLC0415
    except ImportError as exc:
        raise SystemExit(
            f"isorun: error: this command runs the backend, which is not installed ({exc}); "
            "install the isorun-backend package"
        ) from exc
    if data_dir is not None:
        overrides["data_dir"] = data_dir.resolve()
    return BackendSettings(**overrides)


@contextlib.asynccontextmanager
async def _database(settings: BackendSettings) -> AsyncIterator[Database]:
    from isorun_backend.storage import Database  # noqa: PLC0415

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url)
    try:
        await db.upgrade()
        yield db
    finally:
        await db.aclose()


def _up(args: argparse.Namespace) -> int:
    # Until uvicorn takes the signals over (and after it hands them back, re-raising the one
    # it caught), SIGTERM unwinds like Ctrl-C so the registry and VMs are stopped by PID.
    signal.signal(signal.SIGTERM, _raise_stopped)
    if args.dns_upstream:
        # The embedded hostd reads its own settings from the environment.
        os.environ["ISORUN_DNS_UPSTREAM"] = args.dns_upstream
    try:
        with contextlib.ExitStack() as stack:
            overrides: dict[str, Any] = {"url_listen": None if args.urls == "off" else args.urls}
            settings = _backend_settings(args.data_dir, **overrides)
            if args.local_images:
                from isorun_backend.local_images import serve_local_images  # noqa: PLC0415

                _log("local images: building or finding the python base image")
                served = stack.enter_context(
                    serve_local_images(settings.data_dir / "registry", log=_log)
                )
                _log(f"local images: registry {served.registry.url} (pid {served.registry.pid})")
                overrides["image_aliases"] = {**settings.image_aliases, **served.aliases}
            settings = _backend_settings(args.data_dir, **overrides)
            return asyncio.run(_serve(settings, args.host, args.port, args.local_images))
    except (_Stopped, KeyboardInterrupt):
        _log("stopped")
        return 0
    except (RuntimeError, httpx.HTTPError) as exc:
        return _fail(f"local images: {exc}")
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _fail(f"settings: {problems}")


async def _first_key(settings: BackendSettings) -> str | None:
    """A new tenant's key when the database has no tenant yet; None otherwise."""
    from isorun_backend.services import api_keys  # noqa: PLC0415

    async with _database(settings) as db:
        if await api_keys.list_tenants(db):
            return None
        tenant = await api_keys.create_tenant(db, "default")
        return (await api_keys.create_key(db, tenant, "first")).key


async def _serve(settings: BackendSettings, host: str, port: int, prepull: bool) -> int:
    import uvicorn  # noqa: PLC0415
    from isorun_backend.main import create_app  # noqa: PLC0415

    key = await _first_key(settings)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            return _fail(f"the API did not start on {host}:{port} (see above)")
        await asyncio.sleep(0.05)
    url = f"http://{host}:{port}"
    print(f"{API_URL_ENV}={url}", flush=True)
    if key is not None:
        print(f"{API_KEY_ENV}={key}", flush=True)
        _log("a first API key was created (above); it is stored hashed and not shown again")
    if settings.url_listen is not None:
        _log(
            f"public URLs on https://PORT-SANDBOX.{settings.url_domain}:{settings.url_port} "
            f"(listening on {settings.url_listen})"
        )
    _log(f"ready on {url} (data in {settings.data_dir}); Ctrl-C or SIGTERM stops")
    pulls = asyncio.create_task(_prepull(app, settings.image_aliases)) if prepull else None
    try:
        await serving
    finally:
        if pulls is not None:
            pulls.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pulls
    return 0


async def _prepull(app: Any, aliases: dict[str, str]) -> None:
    """Pull the short names' images into the cache now, printing the progress the API cannot
    report; a failure only costs the first create its pull."""
    from isorun_hostd.images import ImageError, PullProgress  # noqa: PLC0415

    last: dict[str, tuple[str, int | None, int]] = {}

    def show(p: PullProgress) -> None:
        quarter = p.bytes_done * 4 // p.bytes_total if p.bytes_total else 0
        if last.get(p.reference) == (p.phase, p.layer_index, quarter):
            return
        last[p.reference] = (p.phase, p.layer_index, quarter)
        where = f" layer {p.layer_index + 1}/{p.layer_count}" if p.layer_index is not None else ""
        amount = f" {p.bytes_done / 1e6:.1f}/{p.bytes_total / 1e6:.1f} MB" if p.bytes_total else ""
        _log(f"pull {p.reference}: {p.phase}{where}{amount}")

    runtime = app.state.services.runtime
    if runtime is None:
        return  # remote nodes: 127.0.0.1 is not theirs, they pull at create
    for name, reference in aliases.items():
        if not reference.startswith("127.0.0.1:"):
            continue  # only the local ones: Docker Hub may be out of reach
        try:
            await runtime.images.pull(reference, progress=show)
        except ImageError as exc:
            _log(f"pull of {name} ({reference}) failed: {exc}")
        else:
            _log(f"image {name} ready")


def _keys_create(args: argparse.Namespace) -> int:
    settings = _backend_settings(args.data_dir)
    from isorun_backend.services import api_keys  # noqa: PLC0415
    from isorun_backend.services.errors import NotFound  # noqa: PLC0415

    async def create(settings: BackendSettings) -> int:
        async with _database(settings) as db:
            tenant = args.tenant
            if tenant is None:
                tenants = await api_keys.list_tenants(db)
                tenant = tenants[0][0] if tenants else await api_keys.create_tenant(db, "default")
            try:
                created = await api_keys.create_key(db, tenant, args.name)
            except NotFound as exc:
                return _fail(str(exc))
        print(created.key)
        _log(f"created {created.info.id} for tenant {tenant}; the key is shown only this once")
        return 0

    return asyncio.run(create(settings))


def _keys_revoke(args: argparse.Namespace) -> int:
    settings = _backend_settings(args.data_dir)
    from isorun_backend.services import api_keys  # noqa: PLC0415
    from isorun_backend.services.errors import NotFound  # noqa: PLC0415

    async def revoke(settings: BackendSettings) -> int:
        async with _database(settings) as db:
            try:
                info = await api_keys.revoke_key(db, args.key_id)
            except NotFound as exc:
                return _fail(str(exc))
        _log(f"revoked {info.id} ({info.prefix}...)")
        return 0

    return asyncio.run(revoke(settings))


def _keys_ls(args: argparse.Namespace) -> int:
    settings = _backend_settings(args.data_dir)
    from isorun_backend.services import api_keys  # noqa: PLC0415

    async def listing(settings: BackendSettings) -> int:
        rows = [("ID", "TENANT", "NAME", "PREFIX", "CREATED", "REVOKED")]
        async with _database(settings) as db:
            for tenant, _name in await api_keys.list_tenants(db):
                for key in await api_keys.list_keys(db, tenant):
                    revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else ""
                    created = key.created_at.isoformat(timespec="seconds")
                    rows.append((key.id, tenant, key.name, key.prefix, created, revoked))
        _print_table(rows)
        return 0

    return asyncio.run(listing(settings))


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


# -- remote commands: the SDK ---------------------------------------------------------------


def _argv(command: list[str]) -> list[str]:
    argv = command[1:] if command[:1] == ["--"] else command
    if not argv:
        raise SystemExit("isorun: error: no command given: isorun run IMAGE -- CMD [ARG...]")
    return argv


async def _with_elapsed(label: str, pending: Awaitable[T]) -> T:
    """Await `pending`, showing `label` and the seconds spent on a terminal's stderr."""
    task = asyncio.ensure_future(pending)
    if not sys.stderr.isatty():
        return await task
    started = time.monotonic()
    frames = "|/-\\"
    tick = 0
    try:
        while not task.done():
            elapsed = time.monotonic() - started
            sys.stderr.write(f"\r{frames[tick % len(frames)]} {label} {elapsed:.1f} s")
            sys.stderr.flush()
            tick += 1
            await asyncio.wait([task], timeout=SPINNER_INTERVAL_S)
    finally:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
        if not task.done():
            task.cancel()
    return task.result()


async def _stream(sandbox: AsyncSandbox, argv: list[str], timeout_s: float | None) -> int:
    """Run `argv`, copy its output to ours as it comes, return the shell-style exit status."""
    exit_event: ExitEvent | None = None
    event: ExecEvent
    async for event in sandbox.exec_stream(argv, timeout_s=timeout_s):
        if isinstance(event, OutputEvent):
            out = sys.stdout if event.stream == "stdout" else sys.stderr
            out.buffer.write(event.data)
            out.flush()
        elif isinstance(event, ExitEvent):
            exit_event = event
    if exit_event is None:
        return _fail("the command's stream ended without an exit status")
    if exit_event.timed_out:
        return EXIT_TIMEOUT
    if exit_event.signal is not None:
        return 128 + exit_event.signal
    return exit_event.exit_code if exit_event.exit_code is not None else EXIT_ISORUN_FAILED


def _run(args: argparse.Namespace) -> int:
    if args.snapshot is not None and args.image is not None:
        # With --snapshot there is no IMAGE: argparse gave it the command's first word.
        args.command = [args.image, *args.command]
        args.image = None
    if (args.image is None) == (args.snapshot is None):
        raise SystemExit("isorun: error: give an IMAGE or --snapshot SNAP (one of them)")
    argv = _argv(args.command)

    async def run() -> int:
        network = _cli_network.network_kwargs(args)
        if args.snapshot is not None:
            creation = AsyncSandbox.create(snapshot=args.snapshot, **network)
        else:
            creation = AsyncSandbox.create(
                args.image, vcpus=args.vcpus, memory_mib=args.memory_mib, **network
            )
        source = args.image or args.snapshot
        sandbox = await _with_elapsed(f"creating a sandbox from {source}", creation)
        try:
            return await _stream(sandbox, argv, args.timeout)
        finally:
            await sandbox.destroy()

    return asyncio.run(run())


def _create(args: argparse.Namespace) -> int:
    async def create() -> int:
        creation = AsyncSandbox.create(
            args.image,
            vcpus=args.vcpus,
            memory_mib=args.memory_mib,
            timeout_s=args.timeout_s,
            **_cli_network.network_kwargs(args),
        )
        sandbox = await _with_elapsed(f"creating a sandbox from {args.image}", creation)
        await sandbox.aclose()
        print(sandbox.id)
        return 0

    return asyncio.run(create())


def _exec(args: argparse.Namespace) -> int:
    argv = _argv(args.command)

    async def run() -> int:
        sandbox = await AsyncSandbox.connect(args.sandbox_id)
        try:
            return await _stream(sandbox, argv, args.timeout)
        finally:
            await sandbox.aclose()

    return asyncio.run(run())


def _ls(_args: argparse.Namespace) -> int:
    async def listing() -> int:
        rows = [("ID", "STATE", "IMAGE", "CREATED", "EXPIRES")]
        async for info in AsyncSandbox.list():
            created = info.created_at.isoformat(timespec="seconds")
            expires = info.expires_at.isoformat(timespec="seconds")
            rows.append((info.id, info.state, info.image, created, expires))
        _print_table(rows)
        return 0

    return asyncio.run(listing())


def _rm(args: argparse.Namespace) -> int:
    async def remove() -> int:
        sandbox = await AsyncSandbox.connect(args.sandbox_id)
        await sandbox.destroy()
        return 0

    return asyncio.run(remove())


def _fork(args: argparse.Namespace) -> int:
    async def fork() -> int:
        async with AsyncClient() as client:
            sandbox = await AsyncSandbox.connect(args.sandbox_id, client=client)
            for clone in await sandbox.fork(args.count):
                print(clone.id)
        return 0

    return asyncio.run(fork())


def _snapshot_create(args: argparse.Namespace) -> int:
    async def save() -> int:
        async with AsyncClient() as client:
            sandbox = await AsyncSandbox.connect(args.sandbox_id, client=client)
            print((await sandbox.snapshot(keep=args.keep, name=args.name)).id)
        return 0

    return asyncio.run(save())


def _snapshot_ls(args: argparse.Namespace) -> int:
    async def listing() -> int:
        rows = [("ID", "SANDBOX", "NAME", "KEEP", "SIZE_MIB", "CREATED")]
        async with AsyncClient() as client:
            async for snap in client.snapshots.list(sandbox_id=args.sandbox):
                rows.append(
                    (
                        snap.id,
                        snap.sandbox_id,
                        snap.name or "",
                        "yes" if snap.keep else "no",
                        f"{snap.size_bytes / (1 << 20):.1f}",
                        snap.created_at.isoformat(timespec="seconds"),
                    )
                )
        _print_table(rows)
        return 0

    return asyncio.run(listing())


def _snapshot_rm(args: argparse.Namespace) -> int:
    async def remove() -> int:
        async with AsyncClient() as client:
            await client.snapshots.delete(args.snapshot_id)
        return 0

    return asyncio.run(remove())


def _hibernate(args: argparse.Namespace) -> int:
    async def hibernate() -> int:
        async with AsyncClient() as client:
            sandbox = await AsyncSandbox.connect(args.sandbox_id, client=client)
            print(f"{sandbox.id} {(await sandbox.hibernate()).state}")
        return 0

    return asyncio.run(hibernate())


def _resume(args: argparse.Namespace) -> int:
    async def resume() -> int:
        async with AsyncClient() as client:
            sandbox = await AsyncSandbox.connect(args.sandbox_id, client=client)
            print(f"{sandbox.id} {(await sandbox.resume()).state}")
        return 0

    return asyncio.run(resume())


def _url(args: argparse.Namespace) -> int:
    async def sign() -> int:
        sandbox = await AsyncSandbox.connect(args.sandbox_id)
        try:
            url = await sandbox.url(args.port, expires_in=args.expires_in, public=not args.private)
        finally:
            await sandbox.aclose()
        print(url.model_dump_json() if args.json else url)
        if not (url.public or args.json):
            _log("private: each request needs an API key of the tenant in X-Isorun-Key")
        return 0

    return asyncio.run(sign())


def _usage(args: argparse.Namespace) -> int:
    params = tuple((name, value) for name in ("since", "until") if (value := getattr(args, name)))
    request = ApiRequest("GET", "/v1/usage", "get usage", idempotent=True, params=params)

    async def report() -> int:
        async with AsyncClient() as client:
            answer = (await client.send(request)).json()
        rows = [("SANDBOX", "VCPUS", "MEMORY_MIB", "START", "END", "VCPU_S", "GIB_S", "USD")]
        for item in answer["data"]:
            rows.append(
                (
                    item["sandbox_id"],
                    str(item["vcpus"]),
                    str(item["memory_mib"]),
                    item["start"],
                    item["end"],
                    str(item["vcpu_seconds"]),
                    str(item["gib_seconds"]),
                    str(item["cost_usd"]),
                )
            )
        _print_table(rows)
        print(
            f"total {answer['since'] or 'start'} .. {answer['until']}: "
            f"{answer['vcpu_seconds']} vCPU-s, {answer['gib_seconds']} GiB-s, "
            f"${answer['cost_usd']}"
        )
        return 0

    return asyncio.run(report())


def _audit_show(args: argparse.Namespace) -> int:
    async def show() -> int:
        rows = [("SEQ", "TIME", "KIND", "FIELDS")]
        async with AsyncClient() as client:
            async for entry in client.audit.list(args.sandbox_id):
                if args.json:
                    print(entry.model_dump_json())
                else:
                    fields = json.dumps(entry.fields, separators=(",", ":"))
                    rows.append((str(entry.seq), entry.time, entry.kind, fields))
        if not args.json:
            _print_table(rows)
        return 0

    return asyncio.run(show())


def _audit_verify(_args: argparse.Namespace) -> int:
    async def verify() -> int:
        async with AsyncClient() as client:
            report = await client.audit.verify()
        for node in report.nodes:
            bad = node.first_bad
            if bad is None:
                print(f"node {node.node}: intact, {node.checked} entries")
            else:
                print(f"node {node.node}: entry {bad.seq}: {bad.reason}")
        return 0 if report.ok else 1

    return asyncio.run(verify())


def _doctor(_args: argparse.Namespace) -> int:
    status = 0
    try:
        from isorun_hostd.__main__ import main as hostd_main  # noqa: PLC0415
    except ImportError:
        print("hostd         not installed here (isorun-hostd): cannot check this host")
    else:
        status = hostd_main(["doctor"])
    url = (os.environ.get(API_URL_ENV) or DEFAULT_API_URL).rstrip("/")
    try:
        answer = httpx.get(f"{url}/v1/health", timeout=HEALTH_TIMEOUT_S, trust_env=False)
        answer.raise_for_status()
        health = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"api           {url}: not reachable ({exc})")
        return 1
    print(
        f"api           {url}: {health.get('status')}, version {health.get('version')}, "
        f"{str(health.get('accelerator')).upper()}"
    )
    if os.environ.get(API_KEY_ENV):
        print(f"api key       {_key_status()}")
    else:
        print(f"api key       ${API_KEY_ENV} not set")
    return status


def _key_status() -> str:
    async def check() -> str:
        try:
            async for _info in AsyncSandbox.list(page_size=1):
                break
        except AuthenticationError:
            return "refused (unknown or revoked)"
        return "accepted"

    return asyncio.run(check())


if __name__ == "__main__":
    sys.exit(main())
