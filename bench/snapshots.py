"""Snapshot figures for hostd: templates, the warm pool, fork, hibernate. Prints, never asserts.

    uv run python -m bench.snapshots [--runs 10] [--json bench/results/snapshots.json]

All on hostd's Runtime in this process, python fixture image (1 vCPU, 256 MiB), image cached:
  cold_create_ms           create with templates off: QEMU start -> boot -> agent -> identity
  template_create_ms       create from the shape's template, a pool entry waiting (refilled
                           between runs)
  template_to_exec_ms      the same create -> first `true` exec result back
  fork1_ms                 fork of 1: save the source once + restore 1 clone, all answering
  fork10_per_clone_ms      fork of 10, total / 10
  hibernate_ms             save to disk and stop the VM
  resume_ms                resume -> the sandbox answers (its identity op is done)
  resume_first_exec_ms     resume_ms + the first `true` exec's result back
  resume_spans_ms          where a resume's time went (medians): launch (QEMU exec -> QMP up;
                           0 with a waiting restore target), load, cont, agent (handshake),
                           identity (the op), exec (the first `true`); then, on the same VM,
                           identity_again and exec_again: the same two steps once the guest
                           code they run is translated; and under TCG blocks_resume and
                           blocks_exec, the code blocks QEMU translated for the resume and for
                           the first exec (what separates the first run from the second)
  fork1_spans_ms           the same for fork of 1's clone, plus save (the source's)
  idle_clone_pss_mib       host memory (PSS) of a template clone's QEMU, 5 clones alive, 2 s idle
  idle_clone_rss_mib       the same, RSS
  idle_clone_jit_mib       the same clone's TCG translation cache: host code generated for the
                           guest code it ran (absent under KVM; each QEMU builds its own)
and the accelerator (KVM or TCG), which dominates every number.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from isorun_hostd.agent_channel import ExecRequest
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime, Sandbox
from isorun_hostd.vm.identity import fresh_identity

from bench.boot import IMAGE, environment, memory_mib, print_table, summary, write_json
from tests.framework.registry import registry_with_fixtures

METRICS = (
    "cold_create_ms",
    "template_create_ms",
    "template_to_exec_ms",
    "fork1_ms",
    "fork10_per_clone_ms",
    "hibernate_ms",
    "resume_ms",
    "resume_first_exec_ms",
    "idle_clone_pss_mib",
    "idle_clone_rss_mib",
    "idle_clone_jit_mib",
)
IDLE_CLONES = 5


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def exec_true(sandbox: Sandbox) -> None:
    process = await sandbox.channel.exec(ExecRequest(argv=["true"]))
    end = await process.wait()
    assert end.exit_code == 0, end


async def first_and_again(sandbox: Sandbox, spans: dict[str, float]) -> None:
    """The first `true` exec of a restored sandbox, then its identity op and exec again, with
    the blocks TCG translated (into ``spans``)."""
    before = await sandbox.vm.translation()
    started = time.perf_counter()
    await exec_true(sandbox)
    spans["exec"] = ms_since(started)
    after = await sandbox.vm.translation()
    if before is not None and after is not None:
        spans["blocks_resume"], spans["blocks_exec"] = before.blocks, after.blocks - before.blocks
    started = time.perf_counter()
    await sandbox.channel.identity(fresh_identity(sandbox.hostname, machine_id=False))
    spans["identity_again"] = ms_since(started)
    started = time.perf_counter()
    await exec_true(sandbox)
    spans["exec_again"] = ms_since(started)


async def wait_for_pool(runtime: Runtime, timeout_s: float = 30.0) -> None:
    assert runtime.templates is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        templates = runtime.templates.templates
        if templates and all(t.pool and not t.spawning for t in templates):
            return
        await asyncio.sleep(0.05)


async def cold(reference: str, settings: Settings, runs: int) -> list[float]:
    runtime = Runtime(settings.model_copy(update={"templates": False}))
    await runtime.start()
    try:
        await runtime.destroy(await runtime.create(reference))  # pull and cache the image
        figures = []
        for _ in range(runs):
            started = time.perf_counter()
            sandbox = await runtime.create(reference)
            figures.append(ms_since(started))
            await runtime.destroy(sandbox)
        return figures
    finally:
        await runtime.aclose()


def spans_ms(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 1) for k in rows[0]} if rows else {}


async def hibernate_resume(
    runtime: Runtime, reference: str, runs: int, figures: dict[str, list[float]]
) -> list[dict[str, float]]:
    spans = []
    for _ in range(runs):
        sandbox = await runtime.create(reference)
        started = time.perf_counter()
        await runtime.hibernate(sandbox)
        figures["hibernate_ms"].append(ms_since(started))
        started = time.perf_counter()
        resumed = await runtime.resume(sandbox.id)
        figures["resume_ms"].append(ms_since(started))
        row = dict(resumed.vm.spans_ms)
        # The first exec is timed alone: the block counts are read around it, not in it.
        await first_and_again(resumed, row)
        figures["resume_first_exec_ms"].append(figures["resume_ms"][-1] + row["exec"])
        spans.append(row)
        await runtime.destroy(resumed)
    return spans


async def measure(reference: str, settings: Settings, runs: int) -> dict[str, object]:
    figures: dict[str, list[float]] = {name: [] for name in METRICS}
    fork_spans: list[dict[str, float]] = []
    figures["cold_create_ms"] = await cold(reference, settings, runs)
    runtime = Runtime(settings)
    await runtime.start()
    try:
        await runtime.destroy(await runtime.create(reference))  # the image and the template
        for _ in range(runs):
            await wait_for_pool(runtime)
            started = time.perf_counter()
            sandbox = await runtime.create(reference)
            figures["template_create_ms"].append(ms_since(started))
            await exec_true(sandbox)
            figures["template_to_exec_ms"].append(ms_since(started))
            await runtime.destroy(sandbox)

        await wait_for_pool(runtime)
        clones = [await runtime.create(reference) for _ in range(IDLE_CLONES)]
        await asyncio.sleep(2)
        for clone in clones:
            assert clone.vm.pid is not None
            rss, pss = memory_mib(clone.vm.pid)
            figures["idle_clone_rss_mib"].append(rss)
            figures["idle_clone_pss_mib"].append(pss)
            jit = await clone.vm.translation()
            if jit is not None:
                figures["idle_clone_jit_mib"].append(jit.code_bytes / 2**20)
        await asyncio.gather(*(runtime.destroy(c) for c in clones))

        source = await runtime.create(reference)
        for _ in range(runs):
            started = time.perf_counter()
            (clone,) = await runtime.fork(source, 1)
            figures["fork1_ms"].append(ms_since(started))
            spans = dict(clone.vm.spans_ms)
            spans["save"] = figures["fork1_ms"][-1] - sum(spans.values())
            await first_and_again(clone, spans)
            fork_spans.append(spans)
            await runtime.destroy(clone)
        for _ in range(max(1, runs // 5)):
            started = time.perf_counter()
            many = await runtime.fork(source, 10)
            figures["fork10_per_clone_ms"].append(ms_since(started) / 10)
            await asyncio.gather(*(runtime.destroy(c) for c in many))
        await runtime.destroy(source)

        resume_spans = await hibernate_resume(runtime, reference, runs, figures)
        caps = runtime.caps
    finally:
        await runtime.aclose()
    return {
        **environment(caps),
        "image": IMAGE,
        "vm": {"vcpus": 1, "mem_mib": 256},
        "pool_size": settings.template_pool_size,
        "restore_pool_size": settings.restore_pool_size,
        **{name: summary(values) for name, values in figures.items() if values},
        "resume_spans_ms": spans_ms(resume_spans),
        "fork1_spans_ms": spans_ms(fork_spans),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=Path("bench/results/snapshots.json"))
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="isorun-bench-") as tmp,
        registry_with_fixtures(python=True) as registry,
    ):
        settings = Settings(state_dir=Path(tmp) / "state", run_dir=Path(tmp) / "run")
        result = asyncio.run(measure(registry.ref(IMAGE), settings, args.runs))
    print_table(result, [name for name in METRICS if name in result])
    for name in ("resume_spans_ms", "fork1_spans_ms"):
        print(name, result[name])
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
