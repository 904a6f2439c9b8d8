"""``docbus config check`` probes the provincial platform with a login: wrong credentials show before the first
delivery, as a refusal, and a platform that is merely down or failing is not mistaken for one."""

from __future__ import annotations

import httpx

from docbus.adapters.registry import build_adapter
from docbus.simulators import SimulatorConfig, create_app, serve

from ..conftest import free_port


async def probe(url: str, secret: str) -> tuple[bool, bool, str]:
    adapter = build_adapter("provincial_axis", {"url": url, "system_id": "docbus", "secret": secret})
    try:
        reach = await adapter.probe(5.0)
    finally:
        await adapter.aclose()
    return reach.reached, reach.refused, reach.detail


async def test_the_probe_logs_in_and_names_refused_credentials() -> None:
    async with serve(create_app("provincial-axis", SimulatorConfig())) as url:
        reached, refused, detail = await probe(url, "docbus-secret")
        assert (reached, refused) == (True, False), detail
        assert detail.endswith("; logged in as docbus")

        reached, refused, detail = await probe(url, "not-the-secret")
        assert (reached, refused) == (True, True), detail
        assert "it refused docbus' SYSTEM_ID and SECRET" in detail and "15" in detail
        assert "not-the-secret" not in detail


async def test_a_platform_that_is_down_or_failing_is_not_a_refusal() -> None:
    reached, refused, detail = await probe(f"http://127.0.0.1:{free_port()}", "docbus-secret")
    assert (reached, refused) == (False, False), detail

    async with serve(create_app("provincial-axis", SimulatorConfig())) as url:
        async with httpx.AsyncClient(base_url=url) as control:  # every call fails with 500 for a while
            set_faults = await control.post("/_sim/faults", json={"error_rate": 1.0})
            assert set_faults.status_code == 200, set_faults.text
        reached, refused, detail = await probe(url, "docbus-secret")
        assert (reached, refused) == (False, False), detail
        assert "its login failed" in detail
