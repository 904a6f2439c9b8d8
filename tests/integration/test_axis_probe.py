"""``docbus config check`` probes each axis with one signed call that changes nothing there (a provincial
platform's login, the national axis' received list): wrong credentials show before the first delivery, as a
refusal, and an axis that is merely down or failing is not mistaken for one."""

from __future__ import annotations

import httpx
import pytest

from docbus.adapters.registry import build_adapter
from docbus.simulators import SimulatorConfig, create_app, serve

from ..conftest import free_port

AXES = {
    # adapter: (simulator, what a successful probe ends with, what a failing one says)
    "provincial_axis": ("provincial-axis", "; logged in as docbus", "its login failed"),
    "national_axis": ("national-axis", "; signed in as docbus (0 waiting for it)", "its signed getReceivedEdocList"),
}


async def probe(adapter_name: str, url: str, secret: str) -> tuple[bool, bool, str]:
    adapter = build_adapter(adapter_name, {"url": url, "system_id": "docbus", "secret": secret})
    try:
        reach = await adapter.probe(5.0)
    finally:
        await adapter.aclose()
    return reach.reached, reach.refused, reach.detail


@pytest.mark.parametrize("adapter_name", AXES)
async def test_the_probe_signs_in_and_names_refused_credentials(adapter_name: str) -> None:
    simulator, success, _ = AXES[adapter_name]
    async with serve(create_app(simulator, SimulatorConfig())) as url:
        reached, refused, detail = await probe(adapter_name, url, "docbus-secret")
        assert (reached, refused) == (True, False), detail
        assert detail.endswith(success), detail

        reached, refused, detail = await probe(adapter_name, url, "not-the-secret")
        assert (reached, refused) == (True, True), detail
        assert "it refused docbus' SYSTEM_ID and SECRET" in detail and "15" in detail
        assert "not-the-secret" not in detail

        async with httpx.AsyncClient(base_url=url) as control:  # the probe left nothing behind at the axis
            received = await control.get("/_sim/received")
            assert received.status_code == 200, received.text
            assert received.json() == {"received": []}


@pytest.mark.parametrize("adapter_name", AXES)
async def test_an_axis_that_is_down_or_failing_is_not_a_refusal(adapter_name: str) -> None:
    simulator, _, failing = AXES[adapter_name]
    reached, refused, detail = await probe(adapter_name, f"http://127.0.0.1:{free_port()}", "docbus-secret")
    assert (reached, refused) == (False, False), detail

    async with serve(create_app(simulator, SimulatorConfig())) as url:
        async with httpx.AsyncClient(base_url=url) as control:  # every call fails with 500 for a while
            set_faults = await control.post("/_sim/faults", json={"error_rate": 1.0})
            assert set_faults.status_code == 200, set_faults.text
        reached, refused, detail = await probe(adapter_name, url, "docbus-secret")
        assert (reached, refused) == (False, False), detail
        assert failing in detail and "failed" in detail, detail
