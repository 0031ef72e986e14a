"""The end of `fraud demo`: the workbench on the demo's database, with a working demo login."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fraud.dev.demo import demo_workbench
from scoring.db.engine import make_engine
from scoring.db.migrate import upgrade
from tests.workbench_support import free_port, new_alert, seed

pytestmark = pytest.mark.integration


def test_demo_workbench_answers_and_its_login_works(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    engine.dispose()
    seed(sqlite_url, [new_alert(i) for i in range(5)])
    with demo_workbench(sqlite_url, None, tmp_path / "logs", port=free_port()) as info:
        user, _, password = info["workbench_login"].partition(" / ")
        with httpx.Client(base_url=info["workbench"], follow_redirects=True) as client:
            page = client.get("/login")
            token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            queue = client.post("/login", data={"username": user, "password": password,
                                                "csrf_token": token})
            assert queue.status_code == 200 and "Alert queue" in queue.text
            assert "C4" in queue.text
        url = info["workbench"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "healthz", timeout=2)  # stopped on exit
