"""The transfer plot of a proxy sweep in the dashboard (issue 30): objective against lr, one curve
per width, with each width's best lr, the slope and the recommended full-size lr beneath it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from service.client import Client

from ..specs import tiny_job
from ..waiting import LIMIT
from .live import ServiceTenant, SharedService
from .test_dashboard import go, points, tab

pytestmark = pytest.mark.xdist_group("dashboard-transfer")

BASE = tiny_job(steps=20, eval={"every": 10, "batches": 2}, optimizer={"preset": "adamw"})


@pytest.fixture(scope="module")
def service(shared_service: SharedService) -> ServiceTenant:
    return shared_service.tenant()


@pytest.fixture
def page(browser: Browser, service: ServiceTenant) -> Iterator[Page]:
    with tab(browser, service) as opened:
        yield opened


def test_the_sweep_page_draws_a_proxy_sweeps_transfer_plot(page: Page, service: ServiceTenant):
    with Client(service.url, service.api_key) as client:
        sweep = client.submit_sweep(
            {
                "name": "dash-transfer",
                "base": BASE,
                "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}},
                "sampler": "grid",
                "pruner": "none",
                "n_trials": 2,
                "parallelism": 2,
                "proxy": {"width": ["1/2", 1]},
            }
        ).wait(timeout=LIMIT, progress=False)
        assert sweep.status == "succeeded", sweep.data["error"]
        transfer = sweep.transfer()
    assert transfer is not None
    (adamw,) = transfer["presets"]
    go(page, service, f"/sweep/{sweep.id}")
    assert points(page, "transfer-adamw") == {"width 32": 2, "width 64": 2}  # one curve per width
    assert page.locator("#transfer .transfer-widths tbody tr").count() == 2  # a row per width: its best lr
    shown = page.text_content("#transfer .recommended-lr") or ""
    assert float(shown) == pytest.approx(adamw["recommendation"]["lr"], rel=0.02)  # shown to 3-4 digits
    assert adamw["verdict"] in (page.text_content("#transfer .transfer-verdict") or "")
