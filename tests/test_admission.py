"""The fair upload gate: one address cannot take every upload slot, waiters are served by
fewest uploads in progress, and a waiter that does not get its turn in time is `Busy`."""

from __future__ import annotations

import asyncio

import pytest

from blockfl.config import ServerConfig
from blockfl.miners.admission import Busy, UploadGate


def test_one_address_keeps_at_most_its_share_and_others_go_first():
    gate = UploadGate(ServerConfig(uploads=3, uploads_per_client=2, upload_wait=0.5))
    order: list[str] = []

    async def upload(client: str, hold: float) -> str:
        try:
            async with gate.turn(client):
                order.append(client)
                await asyncio.sleep(hold)
        except Busy:
            return "busy"
        return "done"

    async def scenario() -> list[str]:
        flood = [asyncio.create_task(upload("attacker", 0.3)) for _ in range(10)]
        await asyncio.sleep(0.05)
        assert gate.in_progress() == 2  # the attacker's share, not the whole gate
        honest = [asyncio.create_task(upload(f"device{i}", 0.05)) for i in range(3)]
        return await asyncio.gather(*flood, *honest)

    results = asyncio.run(scenario())
    flood, honest = results[:10], results[10:]
    assert honest == ["done"] * 3
    # the attacker's later uploads waited behind the honest ones (fewest in progress first)
    first_devices = [order.index(f"device{i}") for i in range(3)]
    assert max(first_devices) < order.index("attacker", 2)
    assert flood.count("busy") >= 4  # 0.5 s of waiting fits few 0.3 s turns of 2 slots
    assert gate.in_progress() == 0


def test_a_full_gate_refuses_after_the_wait():
    gate = UploadGate(ServerConfig(uploads=1, uploads_per_client=1, upload_wait=0.1))

    async def scenario() -> None:
        async with gate.turn("a"):
            with pytest.raises(Busy, match=r"waited 0\.1 s"):
                async with gate.turn("b"):
                    pass

    asyncio.run(scenario())
    assert gate.in_progress() == 0
