"""The isorun sandbox provider for the deepagents-code CLI: `dcode --sandbox isorun`.

deepagents-code finds providers through the `deepagents_code.sandbox_providers` entry-point
group (this package publishes `isorun = "isorun_langchain.provider:IsorunProvider"`),
constructs one with no arguments, and drives the VM's lifecycle through it:

```
dcode --sandbox isorun                  get_or_create()              create a VM ─► mkdir /workspace
                                        ... the agent runs on the returned IsorunSandbox ...
                                        delete(sandbox_id=backend.id)  on exit (only a VM it made)
dcode --sandbox isorun --sandbox-id ID  get_or_create(sandbox_id=ID)  attach; never deleted
```

Keyword arguments of `get_or_create` come from `[sandboxes.providers.isorun.params]` in
`~/.deepagents/config.toml`; the API URL and key from `ISORUN_API_URL` / `ISORUN_API_KEY`, as
everywhere in the SDK. isorun's errors become deepagents-code's: an unknown id is
`SandboxNotFoundError`, every other failure `SandboxError` with the SDK error as its cause.

This module needs deepagents-code (Python >= 3.12), so `isorun_langchain` does not import it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from deepagents_code.integrations.sandbox_provider import (
        SandboxError,
        SandboxInstallHint,
        SandboxNotFoundError,
        SandboxProvider,
        SandboxProviderMetadata,
    )
except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
    msg = (
        "isorun_langchain.provider needs deepagents-code (Python >= 3.12): "
        "pip install 'isorun-langchain[dcode]'"
    )
    raise ImportError(msg) from error

from isorun import IsorunError, NotFound, Sandbox
from isorun._base import SecretArg

from isorun_langchain._sandbox import DEFAULT_TIMEOUT_S, IsorunSandbox

PROVIDER_NAME = "isorun"
DEFAULT_IMAGE = "python"
WORKING_DIR = "/workspace"
"""Where the agent works: created in each new VM, and every command's working directory."""
DEFAULT_SANDBOX_TIMEOUT_S = 60 * 60
"""A new VM's time to live. The SDK's 300 s would end an interactive session under the user;
`timeout_s` in the provider's params raises it (the API allows up to a day)."""

_RUNNING = "running"


class IsorunProvider(SandboxProvider):
    """deepagents-code's `SandboxProvider` over isorun microVMs.

    Args:
        api_key: API key; `ISORUN_API_KEY` when None (deepagents-code passes nothing).
        api_url: API URL; `ISORUN_API_URL` when None.
    """

    def __init__(self, *, api_key: str | None = None, api_url: str | None = None) -> None:
        self._api_key = api_key
        self._api_url = api_url
        # The handles of VMs this provider created or attached to, so that `delete` reuses
        # (and closes) their HTTP clients. The lock guards the dict: `aget_or_create` runs
        # `get_or_create` in worker threads.
        self._sandboxes: dict[str, Sandbox] = {}
        self._lock = threading.Lock()

    @property
    def metadata(self) -> SandboxProviderMetadata:
        """What deepagents-code shows and checks before it creates a VM."""
        return SandboxProviderMetadata(
            name=PROVIDER_NAME,
            working_dir=WORKING_DIR,
            install=SandboxInstallHint(kind="package", name="isorun-langchain[dcode]"),
            supports_sandbox_id=True,
            # The isorun API has no snapshots yet.
            supports_snapshot_name=False,
            backend_module="isorun_langchain",
        )

    def get_or_create(
        self,
        *,
        sandbox_id: str | None = None,
        image: str = DEFAULT_IMAGE,
        vcpus: int = 1,
        memory_mib: int = 1024,
        timeout_s: int = DEFAULT_SANDBOX_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] | None = None,
        profile: str | None = None,
        secrets: Sequence[SecretArg] | None = None,
        command_timeout_s: int = DEFAULT_TIMEOUT_S,
        **kwargs: Any,
    ) -> IsorunSandbox:
        """Attach to the VM `sandbox_id`, or create one.

        The creation options are those of `isorun.Sandbox()`; they are ignored when attaching
        (deepagents-code passes the configured params either way).

        Args:
            sandbox_id: An existing sandbox (`sb-...`); None to create one.
            image: Image to boot: a deployment's short name or a pinned OCI reference.
            vcpus: Virtual CPUs of a new VM.
            memory_mib: Memory of a new VM.
            timeout_s: Time to live of a new VM, in seconds.
            env: Default environment of every command in a new VM.
            labels: Labels of a new VM.
            allow: Egress a new VM may reach (host names, *.wildcards, CIDRs); with none of
                `allow`, `deny` and `profile` it has no network at all.
            deny: Egress closed to a new VM; `allow` wins over it.
            profile: The egress profile of a new VM ("claude-code", "openai", ...).
            secrets: Secrets of a new VM, as `isorun.Secret` fields (`{name, value,
                upstream, header?, base_url_env?}`), injected by the host into requests to
                their upstream. Keep values out of config.toml: build them from the
                environment.
            command_timeout_s: Default limit of each command (`execute(timeout=None)`).
            **kwargs: Refused: any other argument raises `TypeError`.

        Returns:
            A deepagents backend whose commands run in `WORKING_DIR`.

        Raises:
            TypeError: An argument this provider does not know.
            SandboxNotFoundError: No sandbox `sandbox_id` (never existed, deleted, expired
                and reaped, or another tenant's).
            SandboxError: isorun failed: no API key, API unreachable, image refused, quota,
                or the VM `sandbox_id` is not running.
        """
        if kwargs:
            msg = f"isorun provider: unsupported arguments {sorted(kwargs)}"
            raise TypeError(msg)
        if sandbox_id is not None:
            sandbox = self._connect(sandbox_id)
        else:
            sandbox = self._create(
                image,
                vcpus=vcpus,
                memory_mib=memory_mib,
                timeout_s=timeout_s,
                env=env,
                labels=labels,
                allow=allow,
                deny=deny,
                profile=profile,
                secrets=secrets,
            )
        with self._lock:
            self._sandboxes[sandbox.id] = sandbox
        return IsorunSandbox(sandbox=sandbox, workdir=WORKING_DIR, timeout=command_timeout_s)

    def delete(self, *, sandbox_id: str, **kwargs: Any) -> None:
        """Delete the VM `sandbox_id`.

        Args:
            sandbox_id: The sandbox to delete.
            **kwargs: Ignored (the interface passes provider-specific options).

        Raises:
            SandboxNotFoundError: No sandbox `sandbox_id`.
            SandboxError: isorun failed (API unreachable or refusing).
        """
        with self._lock:
            sandbox = self._sandboxes.pop(sandbox_id, None)
        if sandbox is None:
            # Not one of ours: attaching first tells an unknown id apart, which `destroy`
            # alone would not (it treats a sandbox already gone as deleted).
            sandbox = self._connect(sandbox_id, require_running=False)
        try:
            sandbox.destroy()
        except IsorunError as error:
            msg = f"could not delete isorun sandbox {sandbox_id}: {error}"
            raise SandboxError(msg) from error

    def _connect(self, sandbox_id: str, *, require_running: bool = True) -> Sandbox:
        try:
            sandbox = Sandbox.connect(sandbox_id, api_key=self._api_key, api_url=self._api_url)
        except NotFound as error:
            msg = f"isorun sandbox {sandbox_id} not found (deleted, expired or never created)"
            raise SandboxNotFoundError(msg) from error
        except IsorunError as error:
            msg = f"could not attach to isorun sandbox {sandbox_id}: {error}"
            raise SandboxError(msg) from error
        if require_running and sandbox.info.state != _RUNNING:
            sandbox.close()
            msg = (
                f"isorun sandbox {sandbox_id} is {sandbox.info.state}, not running: "
                "start a new one without --sandbox-id"
            )
            raise SandboxError(msg)
        return sandbox

    def _create(
        self,
        image: str,
        *,
        vcpus: int,
        memory_mib: int,
        timeout_s: int,
        env: Mapping[str, str] | None,
        labels: Mapping[str, str] | None,
        allow: Sequence[str] | None,
        deny: Sequence[str] | None,
        profile: str | None,
        secrets: Sequence[SecretArg] | None,
    ) -> Sandbox:
        try:
            sandbox = Sandbox(
                image,
                vcpus=vcpus,
                memory_mib=memory_mib,
                timeout_s=timeout_s,
                env=env,
                labels=labels,
                allow=allow,
                deny=deny,
                profile=profile,
                secrets=secrets,
                api_key=self._api_key,
                api_url=self._api_url,
            )
        except IsorunError as error:
            msg = f"could not create an isorun sandbox from image {image!r}: {error}"
            raise SandboxError(msg) from error
        try:
            sandbox.files.mkdir(WORKING_DIR, parents=True)
        except IsorunError as error:
            # The caller never sees this VM's id, so it is ours to delete.
            try:
                sandbox.destroy()
            except IsorunError:
                sandbox.close()
            msg = f"isorun sandbox {sandbox.id}: could not create {WORKING_DIR}: {error}"
            raise SandboxError(msg) from error
        return sandbox


__all__ = ["IsorunProvider"]
