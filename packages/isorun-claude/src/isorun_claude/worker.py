"""Claude Managed Agents: a self-hosted environment worker with one isorun VM per session.

The documented sandbox-per-session pattern, with the worker on the host and the tools in VMs:

```
poll (environment key) -> claim + ack work item
  session item   -> boot a VM -> EnvironmentWorker.handle_item(tools=isorun_agent_toolset(vm))
                    (heartbeat, the session's tool calls, force-stop) -> destroy the VM
  other item     -> skipped (a queue healthcheck); its lease lapses on its own
```

The guest holds no credential and needs no egress to api.anthropic.com: only tool calls reach
it. Its VMs have no network unless `allow`/`deny`/`profile` open some (`--allow pypi.org`), and
`secrets` (`--secret NAME@UPSTREAM`, the value from `$NAME`) are injected by the host, never
readable in the guest. Skills are downloaded to a host directory per session and memory-store
sync is off, since the VM would not see either. At most `max_sessions` sessions run at once;
the worker claims no more work until one ends.

Console entry point: `isorun-claude-worker` (environment: `ANTHROPIC_API_KEY` or another
credential of the anthropic client, `ANTHROPIC_ENVIRONMENT_ID`, `ANTHROPIC_ENVIRONMENT_KEY`,
`ISORUN_API_URL`, `ISORUN_API_KEY`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence

import anyio
from anthropic import AsyncAnthropic
from anthropic.lib.environments import DEFAULT_MAX_IDLE, EnvironmentWorker
from anthropic.types.beta.environments import BetaSelfHostedWork
from isorun import AsyncClient, AsyncSandbox, Secret
from isorun._cli_network import add_policy_options, network_kwargs

from isorun_claude._agent_toolset import DEFAULT_WORKDIR, isorun_agent_toolset

DEFAULT_MAX_SESSIONS = 8
logger = logging.getLogger("isorun_claude.worker")


class IsorunEnvironmentWorker:
    """Serve a self-hosted Managed Agents environment, each session in its own isorun VM.

    Args:
        client: The anthropic client (its own credential is not used for the work queue).
        environment_id: The `self_hosted` environment to poll.
        environment_key: The environment's key, the worker's standing credential.
        image: The image each session's VM boots from.
        workdir: The agent's working directory in the VM (created at boot).
        max_sessions: Sessions served at once.
        sandbox_client: The isorun client the VMs are created with; one from `ISORUN_API_URL`
            and `ISORUN_API_KEY` when None.
        max_idle: Seconds a session may stay idle before its worker lets it go (see
            `EnvironmentWorker`).
        allow: Egress each VM may reach (host names, *.wildcards, CIDRs); with none of
            `allow`, `deny` and `profile` the VMs have no network at all.
        deny: Egress closed to each VM; `allow` wins over it.
        profile: The egress profile of each VM ("claude-code", "openai", ...).
        secrets: `isorun.Secret`s each VM gets, injected by the host into requests to their
            upstreams.
    """

    def __init__(
        self,
        client: AsyncAnthropic,
        *,
        environment_id: str,
        environment_key: str,
        image: str = "python",
        workdir: str = DEFAULT_WORKDIR,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        sandbox_client: AsyncClient | None = None,
        max_idle: float | None = DEFAULT_MAX_IDLE,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] | None = None,
        profile: str | None = None,
        secrets: Sequence[Secret] | None = None,
    ) -> None:
        self.client = client
        self.environment_id = environment_id
        self.environment_key = environment_key
        self.image = image
        self.workdir = workdir
        self.max_sessions = max_sessions
        self.sandbox_client = sandbox_client
        self.max_idle = max_idle
        self.allow = allow
        self.deny = deny
        self.profile = profile
        self.secrets = secrets

    async def run(self) -> None:
        """Poll for work and serve each session until cancelled.

        Raises:
            anthropic.APIStatusError: The queue refused the environment key (4xx).
        """
        slots = anyio.Semaphore(self.max_sessions)
        work = self.client.beta.environments.work
        async with anyio.create_task_group() as tg:
            async for item in work.poller(
                environment_id=self.environment_id,
                environment_key=self.environment_key,
                # handle_item force-stops each item when its session ends.
                auto_stop=False,
            ):
                if item.data.type != "session":
                    logger.info("skipping work item %s of type %s", item.id, item.data.type)
                    continue
                await slots.acquire()
                tg.start_soon(self._bg_serve, item, slots)

    async def _bg_serve(self, item: BetaSelfHostedWork, slots: anyio.Semaphore) -> None:
        # One failed session must not end the others or the poll loop.
        try:
            await self.serve(item)
        except Exception:
            logger.exception("work item %s (session %s) failed", item.id, item.data.id)
        finally:
            slots.release()

    async def serve(self, item: BetaSelfHostedWork) -> None:
        """Serve one claimed session item: boot its VM, run its tool calls there, destroy it.

        Raises:
            isorun.IsorunError: The VM could not be created.
            ValueError: The item carries neither a usable secret nor is an environment key set.
        """
        creation = AsyncSandbox.create(
            self.image,
            client=self.sandbox_client,
            labels={"anthropic-session": item.data.id},
            allow=self.allow,
            deny=self.deny,
            profile=self.profile,
            secrets=self.secrets,
        )
        async with creation as sandbox:
            await sandbox.files.mkdir(self.workdir)
            with tempfile.TemporaryDirectory(prefix="isorun-claude-") as host_dir:
                worker = EnvironmentWorker(
                    self.client,
                    environment_key=self.environment_key,
                    tools=lambda _ctx: isorun_agent_toolset(sandbox, workdir=self.workdir),
                    workdir=host_dir,
                    max_idle=self.max_idle,
                    memory_sync_interval=None,
                )
                await worker.handle_item(
                    work_id=item.id,
                    environment_id=item.environment_id,
                    session_id=item.data.id,
                    work_secret=item.secret,
                )


def main(argv: list[str] | None = None) -> None:
    """`isorun-claude-worker`: run `IsorunEnvironmentWorker` until interrupted."""
    parser = argparse.ArgumentParser(
        prog="isorun-claude-worker",
        description="Serve a self-hosted Claude Managed Agents environment, one isorun VM "
        "per session.",
    )
    parser.add_argument("--environment-id", default=os.environ.get("ANTHROPIC_ENVIRONMENT_ID"))
    parser.add_argument("--image", default="python")
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR)
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS)
    add_policy_options(parser, create=True)
    args = parser.parse_args(argv)
    # The key stays out of argv, where other users of the host could read it.
    environment_key = os.environ.get("ANTHROPIC_ENVIRONMENT_KEY")
    if not args.environment_id or not environment_key:
        parser.error(
            "set ANTHROPIC_ENVIRONMENT_ID (or --environment-id) and ANTHROPIC_ENVIRONMENT_KEY"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    worker = IsorunEnvironmentWorker(
        AsyncAnthropic(),
        environment_id=args.environment_id,
        environment_key=environment_key,
        image=args.image,
        workdir=args.workdir,
        max_sessions=args.max_sessions,
        **network_kwargs(args),
    )
    # Ctrl-C is the way to stop it; the sessions it served are force-stopped on the way out.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(worker.run())
