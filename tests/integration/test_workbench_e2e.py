"""End to end in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

An analyst signs in, takes the next alert from the queue, reads its reason
codes, decides it (four-eyes on) and sees the audit entry; a supervisor
approves it; an analyst cannot open the users page. Screenshots go to
tests/artifacts/ (git-ignored); with FRAUD_WORKBENCH_DOC_IMAGES=1 the queue,
alert and dashboard shots are also written to docs/images/.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from scoring.db import repository as repo
from scoring.db.engine import make_engine, make_sessionmaker
from scoring.workbench.settings import WorkbenchSettings
from tests.workbench_support import PASSWORD, add_users, live_server, seed

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOC_IMAGES = ROOT / "docs" / "images"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def realistic_alerts(n: int) -> list[repo.NewAlert]:
    rng = random.Random(7)
    out = []
    t0 = datetime(2024, 6, 1, tzinfo=UTC)
    for i in range(n):
        amount = round(rng.lognormvariate(4.2, 1.0), 2)
        score = round(min(0.99, 0.35 + rng.betavariate(2, 3) * 0.7), 4)
        ratio = round(rng.uniform(3.0, 9.0), 1)
        out.append(repo.NewAlert(
            transaction_id=f"TX{100000 + i}", customer_id=f"CARD-{rng.randint(1000, 1040)}",
            terminal_id=f"TERM-{rng.randint(200, 230)}", amount=amount,
            event_time=t0 + timedelta(minutes=37 * i), score=score, threshold=0.35,
            model_version=1 + (i % 3 == 0),
            features={"amount": amount, "merchant_category": rng.choice(["5411", "5999", "4829"]),
                      "country": rng.choice(["FR", "DE", "NG"]), "channel": "ecom",
                      "customer_amount_ratio_30d": ratio, "terminal_risk_30d": 0.44},
            reasons=[
                {"group": "amount", "contribution": round(score * 0.5, 3),
                 "text": f"amount {amount:,.2f}: {ratio}x the card's 30-day mean"},
                {"group": "terminal_risk", "contribution": round(score * 0.3, 3),
                 "text": "terminal: 4 of its 9 known transactions of a 30-day window were fraud"},
                {"group": "customer_novelty", "contribution": round(score * 0.1, 3),
                 "text": "first use of this terminal by the card in 30 days"},
            ],
        ))
    return out


@pytest.fixture
def workbench_db(sqlite_url: str) -> Iterator[str]:
    from scoring.db.migrate import upgrade

    engine = make_engine(sqlite_url)
    upgrade(engine)
    seed(sqlite_url, realistic_alerts(120))
    now = datetime.now(UTC).replace(microsecond=0)
    with engine.begin() as conn:  # raised over the last 10 days, some just now
        for alert_id in range(1, 121):
            created = now - timedelta(hours=(alert_id * 7) % 240, minutes=alert_id % 60)
            conn.execute(text("UPDATE alerts SET created_at = :c WHERE id = :i"),
                         {"c": created.strftime("%Y-%m-%d %H:%M:%S"), "i": alert_id})
    add_users(sqlite_url, {"alice": "analyst", "bob": "analyst", "sam": "supervisor",
                           "ada": "admin"})
    with make_sessionmaker(engine).begin() as session:  # some history for the dashboard
        for alert_id in range(60, 120, 2):
            score = session.scalar(text("SELECT score FROM alerts WHERE id = :i"), {"i": alert_id})
            status = "confirmed_fraud" if score and score > 0.62 else "false_positive"
            repo.label_alert(session, alert_id, status, "bob" if alert_id % 4 else "alice")
    engine.dispose()
    yield sqlite_url


def test_analyst_and_supervisor_in_a_real_browser(workbench_db: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "apt-get install chromium (Debian's browser; never downloaded)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settings = WorkbenchSettings(db_url=workbench_db, four_eyes=True, sla_hours=24,
                                 secure_cookies=False)
    with live_server(settings) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            analyst = browser.new_context(viewport={"width": 1360, "height": 900})
            page = analyst.new_page()
            page.goto(base + "/queue")
            expect(page).to_have_url(base + "/login?next=/queue")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Alert queue")
            expect(page.locator("table.queue tbody tr")).to_have_count(50)
            page.screenshot(path=str(ARTIFACTS / "queue.png"), full_page=False)

            page.click("#next-alert")
            expect(page.locator(".flash")).to_have_text("Assigned to you.")
            heading = page.locator("h1").inner_text()
            alert_id = int(heading.split()[1])
            reasons = page.locator("#reasons ol.reasons li")
            expect(reasons).to_have_count(3)
            expect(reasons.first).to_contain_text("Amount")
            expect(reasons.first).to_contain_text("x the card's 30-day mean")
            expect(reasons.nth(1)).to_contain_text("4 of its 9 known transactions")
            page.screenshot(path=str(ARTIFACTS / "alert.png"), full_page=True)

            page.check("input[value=confirmed_fraud]")
            page.fill("textarea[name=note]", "card holder did not make this purchase")
            page.click("#decide button[type=submit]")
            expect(page.locator(".flash")).to_have_text("waiting for a supervisor's approval")
            expect(page.locator("#proposal")).to_contain_text("proposed: confirmed fraud by alice")
            audit_rows = page.locator("#audit tbody tr")
            expect(audit_rows.first).to_contain_text("propose")
            expect(audit_rows.first).to_contain_text("alice")
            expect(audit_rows.nth(1)).to_contain_text("claim next")
            page.screenshot(path=str(ARTIFACTS / "alert-proposed.png"), full_page=True)

            denied = page.goto(base + "/users")
            assert denied is not None and denied.status == 403
            expect(page.locator("h1")).to_have_text("Not allowed")
            page.screenshot(path=str(ARTIFACTS / "analyst-users-denied.png"))
            page.goto(base + "/queue")
            expect(page.locator("nav")).to_contain_text("Dashboard")
            expect(page.locator("nav")).not_to_contain_text("Users")

            supervisor = browser.new_context(viewport={"width": 1360, "height": 900})
            sup = supervisor.new_page()
            sup.goto(base + "/login")
            sup.fill("input[name=username]", "sam")
            sup.fill("input[name=password]", PASSWORD)
            sup.click("button[type=submit]")
            sup.click("nav >> text=Approvals")
            expect(sup.locator("h1")).to_have_text("Decisions waiting for approval")
            sup.click(f"table.queue a[href='/alerts/{alert_id}']")
            expect(sup.locator(".approval")).to_contain_text("alice proposes confirmed fraud")
            sup.click("#approve")
            expect(sup.locator(".flash")).to_have_text("Approved: the decision is final.")
            expect(sup.locator("h1 .badge").first).to_have_text("confirmed fraud")
            expect(sup.locator("#audit tbody tr").first).to_contain_text("approve")
            expect(sup.locator("#audit tbody tr").first).to_contain_text("sam")
            sup.screenshot(path=str(ARTIFACTS / "alert-approved.png"), full_page=True)

            sup.goto(base + "/dashboard")
            expect(sup.locator("#capacity tbody tr").first).to_be_visible()
            images = sup.locator(".charts img")
            expect(images).to_have_count(7)
            sup.wait_for_function(
                "() => [...document.querySelectorAll('.charts img')]"
                ".every(i => i.complete && i.naturalWidth > 0)")
            sup.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    if os.environ.get("FRAUD_WORKBENCH_DOC_IMAGES") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        for name in ("queue", "alert", "dashboard"):
            shutil.copyfile(ARTIFACTS / f"{name}.png", DOC_IMAGES / f"workbench-{name}.png")
