"""GET /node/v1/info: capacity and cached images, for the backend's placement."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from isorun_hostd.api.deps import RuntimeDep
from isorun_hostd.api.models import NodeInfo

router = APIRouter(tags=["node"])


@router.get("/info", name="info")
async def info(runtime: RuntimeDep) -> NodeInfo:
    room = runtime.capacity()
    images = await asyncio.to_thread(runtime.cached_images)
    return NodeInfo(
        accelerator=runtime.caps.accel,
        vcpus_total=room.vcpus_total,
        vcpus_allocated=room.vcpus_allocated,
        memory_mib_total=room.memory_mib_total,
        memory_mib_allocated=room.memory_mib_allocated,
        images=sorted(images),
    )
