"""Creates that fail say why, naming the reference, and leave nothing behind.

The autouse ``no_leaks`` fixture (tests/conftest.py) checks after each test that no QEMU
process, run folder entry or temp file in the image cache was left; these tests also check
that no disk was built for the failed image.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from isorun_hostd.agent_channel import ChannelClosed
from isorun_hostd.config import Settings
from isorun_hostd.images import ImageError
from isorun_hostd.sandboxes import Runtime

from tests.fixtures.build import build_light
from tests.framework.registry import Registry, free_port, run_registry

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]


def _disks(settings: Settings) -> set[Path]:
    return set((settings.images_dir / "disks").glob("*"))


async def _refused(runtime: Runtime, settings: Settings, reference: str, *fragments: str) -> str:
    disks = _disks(settings)
    with pytest.raises(ImageError) as info:
        await runtime.create(reference)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert _disks(settings) == disks
    assert runtime.sandboxes == []
    return message


async def test_floating_and_missing_tags_are_refused(
    runtime: Runtime, settings: Settings, registry: Registry
) -> None:
    base = registry.ref("busybox:1.0").rpartition(":")[0]
    await _refused(runtime, settings, f"{base}:latest", base, "latest", "pin")
    await _refused(runtime, settings, f"{base}:stable", "stable", "pin")
    await _refused(runtime, settings, f"{base}:lts", "lts")
    await _refused(runtime, settings, base, base, "no tag", "digest")


async def test_unknown_tag_and_wrong_digest(
    runtime: Runtime, settings: Settings, registry: Registry
) -> None:
    base = registry.ref("busybox:1.0").rpartition(":")[0]
    await _refused(runtime, settings, f"{base}:9.9", f"{base}:9.9")
    wrong = f"{base}@sha256:{'ab' * 32}"
    await _refused(runtime, settings, wrong, "sha256:abab")


async def test_unreachable_registry(runtime: Runtime, settings: Settings) -> None:
    reference = f"127.0.0.1:{free_port()}/isorun/busybox:1.0"
    await _refused(runtime, settings, reference, reference)


async def test_bad_credentials(settings: Settings) -> None:
    with run_registry("basic") as secured:
        image = next(i for i in build_light() if i.name_tag == "busybox:1.0")
        secured.push_image(image)
        reference = secured.ref("busybox:1.0")
        runtime = Runtime(
            Settings(
                state_dir=settings.state_dir,
                run_dir=settings.run_dir,
                registry_logins={secured.host: {"username": "testuser", "password": "nope"}},
            )
        )
        await runtime.start()
        try:
            message = await _refused(runtime, settings, reference, reference)
            assert "credentials" in message or "401" in message or "auth" in message.lower()
        finally:
            await runtime.aclose()


async def test_corrupt_blob(runtime: Runtime, settings: Settings) -> None:
    with run_registry() as own:
        image = next(i for i in build_light() if i.name_tag == "whiteout:plain")
        own.push_image(image, "corrupted:1.0")
        manifest = _manifest_layers(own, "corrupted:1.0")
        own.corrupt_blob(manifest[-1])
        reference = own.ref("corrupted:1.0")
        await _refused(runtime, settings, reference, reference)


def _manifest_layers(registry: Registry, name_tag: str) -> list[str]:
    repo, _, tag = name_tag.partition(":")
    accept = "application/vnd.oci.image.manifest.v1+json"
    answer = httpx.get(
        f"{registry.url}/v2/isorun/{repo}/manifests/{tag}", headers={"Accept": accept}
    )
    answer.raise_for_status()
    return [layer["digest"] for layer in answer.json()["layers"]]


async def test_killing_qemu_fails_a_running_exec_within_a_second(
    runtime: Runtime, registry: Registry
) -> None:
    sandbox = await runtime.create(registry.ref("busybox:1.0"))
    try:
        process = await sandbox.exec("sleep 600")
        assert sandbox.vm.pid is not None
        os.kill(sandbox.vm.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(process.wait(), 5)
        assert time.monotonic() - started < 1.0
    finally:
        await runtime.destroy(sandbox)
