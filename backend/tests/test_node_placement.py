"""Placement as a pure function: room first, then image-cache affinity, then least loaded."""

from __future__ import annotations

from isorun_backend.nodes import place
from isorun_hostd.api.models import NodeInfo

IMAGE = "registry.test/busybox:1.0"


def node(
    vcpus: tuple[int, int], memory: tuple[int, int], images: list[str] | None = None
) -> NodeInfo:
    return NodeInfo(
        accelerator="tcg",
        vcpus_allocated=vcpus[0],
        vcpus_total=vcpus[1],
        memory_mib_allocated=memory[0],
        memory_mib_total=memory[1],
        images=images or [],
    )


def test_only_nodes_with_room_for_both_vcpus_and_memory_qualify() -> None:
    nodes = {
        "a": node((3, 4), (0, 8192)),  # one vCPU free
        "b": node((0, 4), (7800, 8192)),  # 392 MiB free
        "c": node((2, 4), (4096, 8192)),
    }
    assert place(nodes, vcpus=2, mem_mib=512, image_ref=IMAGE) == "c"
    assert place(nodes, vcpus=3, mem_mib=392, image_ref=IMAGE) == "b"  # exactly full fits


def test_no_node_with_room_is_none() -> None:
    nodes = {"a": node((4, 4), (0, 8192)), "b": node((0, 4), (8000, 8192))}
    assert place(nodes, vcpus=1, mem_mib=256, image_ref=IMAGE) is None
    assert place({}, vcpus=1, mem_mib=256, image_ref=IMAGE) is None


def test_a_node_with_the_image_cached_wins_over_a_less_loaded_one() -> None:
    nodes = {"idle": node((0, 8), (0, 8192)), "warm": node((6, 8), (0, 8192), [IMAGE])}
    assert place(nodes, vcpus=1, mem_mib=256, image_ref=IMAGE) == "warm"
    assert place(nodes, vcpus=1, mem_mib=256, image_ref="other:1") == "idle"


def test_then_the_least_loaded_by_its_fuller_resource_then_the_name() -> None:
    nodes = {
        "a": node((1, 8), (6000, 8192)),  # memory 73 % full
        "b": node((4, 8), (1024, 8192)),  # vCPUs 50 % full
        "c": node((4, 8), (0, 8192)),  # vCPUs 50 % full, like b
    }
    assert place(nodes, vcpus=1, mem_mib=256, image_ref=IMAGE) == "b"
    assert (
        place(
            {"z": node((0, 4), (0, 4096)), "y": node((0, 4), (0, 4096))},
            vcpus=1,
            mem_mib=1,
            image_ref=IMAGE,
        )
        == "y"
    )
