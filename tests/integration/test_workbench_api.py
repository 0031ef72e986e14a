"""The workbench's API and pages on real databases: every route and role, refusals,
four-eyes, paging, CSRF, session expiry, throttling, concurrent "next alert", the audit chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from scoring.db import repository as repo
from scoring.db.engine import make_engine, make_sessionmaker
from scoring.db.workbench_models import WebSession
from scoring.workbench.app import create_app
from scoring.workbench.settings import WorkbenchSettings
from tests.workbench_support import (
    PASSWORD,
    Account,
    add_users,
    bearer,
    csrf_of,
    live_server,
    login,
    new_alert,
    seed,
)

pytestmark = pytest.mark.integration

FRAUD = Path(sys.executable).with_name("fraud")
ROLES = {"alice": "analyst", "bob": "analyst", "sam": "supervisor", "sue": "supervisor",
         "ada": "admin"}


def make_client(url: str, **settings: object) -> TestClient:
    app = create_app(WorkbenchSettings(db_url=url, secure_cookies=False, **settings))  # type: ignore[arg-type]
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture
def sqlite_db(sqlite_url: str) -> str:
    from scoring.db.migrate import upgrade

    engine = make_engine(sqlite_url)
    upgrade(engine)
    engine.dispose()
    return sqlite_url


@pytest.fixture
def accounts_sqlite(sqlite_db: str) -> dict[str, Account]:
    seed(sqlite_db, [new_alert(i) for i in range(40)])
    return add_users(sqlite_db, ROLES)


# --- every route, every role ---------------------------------------------------------------------


def test_every_api_route_answers_each_role_as_the_rules_say(
    sqlite_db: str, accounts_sqlite: dict[str, Account]
) -> None:
    acc = accounts_sqlite
    with make_client(sqlite_db, four_eyes=True) as c:
        def call(who: str | None, method: str, path: str, body: object = None) -> httpx.Response:
            headers = bearer(acc[who]) if who else {}
            return c.request(method, "/api/v1" + path, headers=headers,
                             json=body if body is not None else None)

        # 401 for every route without a token, and with a bad one
        for method, path in [("GET", "/alerts"), ("GET", "/alerts/1"), ("POST", "/alerts/1/claim"),
                             ("POST", "/alerts/next"), ("POST", "/alerts/1/decision"),
                             ("GET", "/audit?alert_id=1"), ("GET", "/stats"),
                             ("POST", "/alerts/1/approve"), ("POST", "/alerts/1/release")]:
            assert call(None, method, path).status_code == 401, path
            bad = c.request(method, "/api/v1" + path, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401 and bad.json()["detail"]
            assert bad.headers["www-authenticate"] == "Bearer"

        # reading: every role
        for who in ("alice", "sam", "ada"):
            assert call(who, "GET", "/alerts").status_code == 200
            assert call(who, "GET", "/alerts/1").status_code == 200
            assert call(who, "GET", "/stats").status_code == 200
            assert call(who, "GET", "/audit?alert_id=1").status_code == 200
        assert "workload" not in call("alice", "GET", "/stats").json()
        assert "workload" in call("sam", "GET", "/stats").json()
        assert call("alice", "GET", "/audit").status_code == 403  # the whole trail
        assert call("sam", "GET", "/audit").status_code == 200
        assert call("ada", "GET", "/audit").status_code == 200
        assert call("alice", "GET", "/alerts/999999").status_code == 404
        assert call("alice", "GET", "/audit?alert_id=999999").status_code == 404
        assert call("alice", "GET", "/alerts?assignee=bob").status_code == 403
        assert call("sam", "GET", "/alerts?assignee=bob").status_code == 200
        assert call("alice", "GET", "/alerts?sort=size").status_code == 422
        assert call("alice", "GET", "/alerts?cursor=garbage").status_code == 422
        assert call("alice", "GET", "/alerts?limit=0").status_code == 422

        # the admin manages users but does not work cases
        for method, path, body in [("POST", "/alerts/next", None),
                                   ("POST", "/alerts/1/claim", None),
                                   ("POST", "/alerts/1/decision", {"status": "false_positive"}),
                                   ("POST", "/cards/close", {"customer_id": "C1",
                                                             "status": "false_positive"})]:
            assert call("ada", method, path, body).status_code == 403, path
        # analysts neither reassign nor approve nor return
        assert call("alice", "POST", "/alerts/1/assign", {"assignee": "bob"}).status_code == 403
        assert call("alice", "POST", "/alerts/1/approve").status_code == 403
        assert call("alice", "POST", "/alerts/1/return", {"comment": "x"}).status_code == 403

        # claim: 200, then 409 for someone else, 200 again for the holder
        assert call("alice", "POST", "/alerts/1/claim").json()["alert"]["assigned_to"] == "alice"
        assert call("alice", "POST", "/alerts/1/claim").status_code == 200
        conflict = call("bob", "POST", "/alerts/1/claim")
        assert conflict.status_code == 409 and "alice" in conflict.json()["detail"]
        assert call("bob", "POST", "/alerts/1/decision",
                    {"status": "false_positive"}).status_code == 409
        assert call("bob", "POST", "/alerts/1/release").status_code == 403
        assert call("alice", "POST", "/alerts/1/decision", {"status": "maybe"}).status_code == 422
        assert call("alice", "POST", "/alerts/999999/claim").status_code == 404
        assert call("alice", "POST", "/alerts/0/claim").status_code == 422
        mine = call("alice", "GET", "/alerts?assignee=me").json()["items"]
        assert [a["id"] for a in mine] == [1]

        # four-eyes: a proposal, approved by another supervisor only
        proposed = call("alice", "POST", "/alerts/1/decision",
                        {"status": "confirmed_fraud", "note": "card holder confirmed"})
        assert proposed.status_code == 200 and proposed.json()["final"] is False
        assert proposed.json()["alert"]["status"] == "open"
        assert proposed.json()["alert"]["proposed_status"] == "confirmed_fraud"
        pending = call("sam", "GET", "/alerts?pending=true&assignee=anyone").json()["items"]
        assert [a["id"] for a in pending] == [1]
        returned = call("sam", "POST", "/alerts/1/return", {"comment": "check the terminal"})
        assert returned.status_code == 200 and returned.json()["alert"]["proposed_status"] is None
        assert call("sam", "POST", "/alerts/1/approve").status_code == 409  # nothing to approve
        call("alice", "POST", "/alerts/1/decision", {"status": "confirmed_fraud"})
        approved = call("sam", "POST", "/alerts/1/approve")
        assert approved.status_code == 200
        final = approved.json()["alert"]
        assert (final["status"], final["reviewed_by"]) == ("confirmed_fraud", "alice")
        assert call("alice", "POST", "/alerts/1/decision",
                    {"status": "false_positive"}).status_code == 409  # decided already
        assert call("alice", "POST", "/alerts/1/decision", {"status": "open"}).status_code == 403
        # a supervisor's own proposal needs the other supervisor
        call("sam", "POST", "/alerts/2/decision", {"status": "false_positive"})
        assert call("sam", "POST", "/alerts/2/approve").status_code == 403
        assert call("sue", "POST", "/alerts/2/approve").status_code == 200
        reopened = call("sam", "POST", "/alerts/1/decision",
                        {"status": "open", "note": "chargeback"})
        assert reopened.status_code == 200 and reopened.json()["alert"]["status"] == "open"

        # reassign and release by a supervisor
        assert call("sam", "POST", "/alerts/3/assign", {"assignee": "bob"}).status_code == 200
        assert call("sam", "POST", "/alerts/3/assign", {"assignee": "ada"}).status_code == 422
        assert call("sam", "POST", "/alerts/3/assign", {"assignee": "nobody"}).status_code == 422
        assert call("alice", "POST", "/alerts/3/claim").status_code == 409
        assert call("sam", "POST", "/alerts/3/release").json()["alert"]["assigned_to"] is None
        assert call("sam", "POST", "/alerts/3/release").status_code == 409

        # bulk close of a card: skips what another analyst holds
        call("bob", "POST", "/alerts/9/claim")  # alert 9 is card C3
        bulk = call("alice", "POST", "/cards/close",
                    {"customer_id": "C3", "status": "false_positive", "note": "merchant known"})
        assert bulk.status_code == 200
        assert 9 in bulk.json()["skipped"] and bulk.json()["final"] is False
        assert len(bulk.json()["decided"]) == 7

        detail = call("alice", "GET", "/alerts/1").json()
        assert [r["group"] for r in detail["alert"]["reasons"]] == ["amount", "terminal_risk",
                                                                    "customer_novelty"]
        assert detail["alert"]["features"]["merchant_category"] == "5999"
        assert all(a["customer_id"] == "C0" for a in detail["card_alerts"])
        assert all(a["terminal_id"] == "T0" for a in detail["terminal_alerts"])
        actions = [e["action"] for e in detail["audit"]]
        assert actions == ["reopen", "approve", "propose", "return", "propose", "claim"]

        # next: claims in score order, then 404 when none is left
        seen = set()
        while True:
            r = call("bob", "POST", "/alerts/next")
            if r.status_code == 404:
                break
            assert r.status_code == 200
            seen.add(r.json()["alert"]["id"])
        assert r.json() == {"detail": "no open, unassigned alert"}
        assert len(seen) > 20

        openapi = c.get("/api/v1/openapi.json").json()
        assert {"/api/v1/alerts", "/api/v1/alerts/{alert_id}", "/api/v1/alerts/{alert_id}/claim",
                "/api/v1/alerts/next", "/api/v1/alerts/{alert_id}/decision", "/api/v1/audit",
                "/api/v1/stats"} <= set(openapi["paths"])
        assert not any(p.startswith("/queue") for p in openapi["paths"])


# --- the same flow on both databases, without four-eyes --------------------------------------


def test_decisions_are_final_without_four_eyes_and_feed_labels(alerts_db_url: str) -> None:
    seed(alerts_db_url, [new_alert(i) for i in range(12)])
    acc = add_users(alerts_db_url, {"alice": "analyst"})
    with make_client(alerts_db_url) as c:
        h = bearer(acc["alice"])
        first = c.post("/api/v1/alerts/next", headers=h).json()["alert"]
        assert first["score"] == max(0.5 + (i % 50) / 100 for i in range(12))
        r = c.post(f"/api/v1/alerts/{first['id']}/decision", headers=h,
                   json={"status": "confirmed_fraud", "note": "stolen"})
        assert r.json()["final"] is True and r.json()["alert"]["status"] == "confirmed_fraud"
        bulk = c.post("/api/v1/cards/close", headers=h,
                      json={"customer_id": "C2", "status": "false_positive"}).json()
        assert bulk["final"] is True and bulk["skipped"] == []
        assert c.get("/api/v1/stats", headers=h).json()["alerts_by_status"][
            "false_positive"] == len(bulk["decided"])
    engine = make_engine(alerts_db_url)
    try:
        with make_sessionmaker(engine)() as session:
            labels = repo.labels_since(session, datetime(2000, 1, 1, tzinfo=UTC))
            decisions = repo.decisions_after(session, 0)
            assert len(labels) == len(decisions) == 1 + len(bulk["decided"])
            assert [d.id for d in decisions] == sorted(d.id for d in decisions)
            assert decisions[0].to_record()["is_fraud"] == 1
            assert repo.decisions_after(session, decisions[-1].id) == []
    finally:
        engine.dispose()


def test_keyset_pages_walk_every_alert_once_in_order(alerts_db_url: str) -> None:
    alerts = [new_alert(i, score=round(0.5 + (i % 7) / 20, 4)) for i in range(73)]
    seed(alerts_db_url, alerts)
    acc = add_users(alerts_db_url, {"sam": "supervisor"})
    with make_client(alerts_db_url) as c:
        h = bearer(acc["sam"])
        for sort, params in [("score", {}), ("time", {}), ("amount", {}),
                             ("score", {"min_amount": "100", "terminal_id": "T1"})]:
            got: list[dict[str, object]] = []
            cursor = None
            while True:
                query = {"sort": sort, "limit": "10", **params}
                if cursor:
                    query["cursor"] = cursor
                page = c.get("/api/v1/alerts", headers=h, params=query).json()
                got += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            full = c.get("/api/v1/alerts", headers=h,
                         params={"sort": sort, "limit": "500", **params}).json()["items"]
            assert [a["id"] for a in got] == [a["id"] for a in full]
            assert len({a["id"] for a in got}) == len(got)
            key = {"score": "score", "time": "created_at", "amount": "amount"}[sort]
            values = [(a[key], a["id"]) for a in full]
            assert values == sorted(values, reverse=sort != "time")
            if params:
                assert full and all(a["terminal_id"] == "T1" and a["amount"] >= 100 for a in full)
            else:
                assert len(full) == 73
        score_cursor = c.get("/api/v1/alerts", headers=h, params={"limit": "1"}).json()
        wrong = c.get("/api/v1/alerts", headers=h,
                      params={"sort": "time", "cursor": score_cursor["next_cursor"]})
        assert wrong.status_code == 422  # a score cursor on the time order


# --- pages: sign-in, CSRF, expiry, throttling, roles ---------------------------------------------


def test_pages_require_csrf_and_sessions_expire(
    sqlite_db: str, accounts_sqlite: dict[str, Account]
) -> None:
    with make_client(sqlite_db, four_eyes=True, session_idle_seconds=600) as c:
        assert c.get("/queue", follow_redirects=False).headers["location"].startswith("/login")
        no_cookie = c.post("/login", data={"username": "alice", "password": PASSWORD,
                                           "csrf_token": "forged"}, follow_redirects=False)
        assert no_cookie.status_code == 403
        wrong = login(c, "alice", "wrong password 123")
        assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
        ok = login(c, "alice")
        assert ok.status_code == 200 and "Alert queue" in ok.text
        cookie = c.cookies.get("wb_session")
        assert cookie
        set_cookie = ok.history[0].headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
        token = csrf_of(ok.text)

        # every state-changing form refuses a missing or wrong token
        for path, data in [("/queue/next", {}), ("/alerts/5/claim", {}),
                           ("/alerts/5/decision", {"status": "false_positive"}),
                           ("/cards/close", {"customer_id": "C1", "status": "false_positive"}),
                           ("/logout", {})]:
            assert c.post(path, data=data, follow_redirects=False).status_code == 403, path
            bad = c.post(path, data={**data, "csrf_token": token[:-2] + "xx"},
                         follow_redirects=False)
            assert bad.status_code == 403, path
        took = c.post("/queue/next", data={"csrf_token": token}, follow_redirects=False)
        assert took.status_code == 303 and took.headers["location"].startswith("/alerts/")
        header = c.post("/alerts/5/claim", headers={"X-CSRF-Token": token},
                        follow_redirects=False)
        assert header.status_code == 303  # htmx sends the token as a header
        page = c.get(took.headers["location"].split("?")[0])
        assert "Why it was flagged" in page.text and "6.2x the card" in page.text
        assert c.get("/users").status_code == 403  # an analyst cannot open the users page
        assert c.get("/audit").status_code == 403
        assert c.get("/dashboard").status_code == 200
        assert c.get("/dashboard/charts/workload.svg").status_code == 404
        svg = c.get("/dashboard/charts/alerts_per_day.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        assert "default-src 'self'" in page.headers["content-security-policy"]

        # idle expiry: the session row's last request 11 minutes ago
        engine = make_engine(sqlite_db)
        with make_sessionmaker(engine).begin() as session:
            session.execute(update(WebSession).values(
                last_seen_at=datetime.now(UTC) - timedelta(minutes=11)))
        refused = c.get("/queue", follow_redirects=False)
        assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
        assert c.post("/queue/next", data={"csrf_token": token},
                      follow_redirects=False).headers["location"].startswith("/login")
        # absolute expiry, however recent the last request
        login(c, "alice")
        with make_sessionmaker(engine).begin() as session:
            session.execute(update(WebSession).values(
                expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        assert c.get("/queue", follow_redirects=False).status_code == 303
        engine.dispose()

        # the admin's users page; a disabled user's session and token stop at once
        admin = TestClient(c.app, base_url="http://127.0.0.1")
        admin_page = login(admin, "ada")
        users = admin.get("/users")
        assert users.status_code == 200 and "bob" in users.text
        made = admin.post("/users/bob/token", data={"csrf_token": csrf_of(admin_page.text)})
        assert made.status_code == 200 and "fwb_" in made.text
        bob = TestClient(c.app, base_url="http://127.0.0.1")
        login(bob, "bob")
        assert bob.get("/queue").status_code == 200
        r = admin.post("/users/bob/disable", data={"csrf_token": csrf_of(admin_page.text)},
                       follow_redirects=False)
        assert r.status_code == 303
        assert bob.get("/queue", follow_redirects=False).status_code == 303
        assert c.get("/api/v1/alerts", headers=bearer(accounts_sqlite["bob"])).status_code == 401


def test_sign_in_is_throttled_per_account(sqlite_db: str,
                                          accounts_sqlite: dict[str, Account]) -> None:
    with make_client(sqlite_db, max_failures_per_account=3) as c:
        for _ in range(3):
            assert login(c, "alice", "not the password").status_code == 401
        throttled = login(c, "alice")  # the right password, but too many failures
        assert throttled.status_code == 429
        assert login(c, "bob").status_code == 200  # another account is not affected


def test_access_log_has_paths_but_no_query_strings(
    sqlite_db: str, accounts_sqlite: dict[str, Account], caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(sqlite_db) as c, caplog.at_level("INFO", logger="fraud.workbench.access"):
        c.get("/api/v1/alerts?customer_id=C-SECRET-CARD",
              headers=bearer(accounts_sqlite["alice"]))
        login(c, "alice")
    lines = [r.getMessage() for r in caplog.records if r.name == "fraud.workbench.access"]
    assert any("GET /api/v1/alerts 200" in line and "user=alice" in line for line in lines)
    joined = "\n".join(lines)
    assert "C-SECRET-CARD" not in joined and PASSWORD not in joined and "?" not in joined


# --- concurrency: real HTTP against uvicorn -------------------------------------------------------


def test_concurrent_next_alert_never_gives_one_alert_twice(alerts_db_url: str) -> None:
    seed(alerts_db_url, [new_alert(i, score=0.9) for i in range(60)])  # all tied: id decides
    names = {f"a{i}": "analyst" for i in range(6)}
    acc = add_users(alerts_db_url, names)
    claimed: dict[str, list[int]] = {n: [] for n in names}
    errors: list[str] = []
    barrier = threading.Barrier(len(names))
    with live_server(WorkbenchSettings(db_url=alerts_db_url, secure_cookies=False)) as base:
        def analyst(name: str) -> None:
            with httpx.Client(base_url=base, headers=bearer(acc[name]), timeout=30) as client:
                barrier.wait()
                while True:
                    r = client.post("/api/v1/alerts/next")
                    if r.status_code == 404:
                        return
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text}")
                        return
                    claimed[name].append(r.json()["alert"]["id"])

        threads = [threading.Thread(target=analyst, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        everything = [i for ids in claimed.values() for i in ids]
        assert len(everything) == len(set(everything)) == 60
        assert sum(1 for ids in claimed.values() if ids) >= 2  # they really competed
        for ids in claimed.values():
            assert ids == sorted(ids)  # each got them oldest first (equal scores)
        with httpx.Client(base_url=base, headers=bearer(acc["a0"])) as client:
            mine = client.get("/api/v1/alerts", params={"assignee": "me", "limit": 500}).json()
            assert sorted(a["id"] for a in mine["items"]) == sorted(claimed["a0"])
    result = fraud("audit", "verify", "--db", alerts_db_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["entries"] == 60 + 2 * len(names)


# --- the audit chain ------------------------------------------------------------------------------


def fraud(*args: str, stdin: str | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FRAUD), *args], input=stdin, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=False)


@pytest.fixture
def decided_db(alerts_db_url: str) -> Iterator[str]:
    seed(alerts_db_url, [new_alert(i) for i in range(6)])
    acc = add_users(alerts_db_url, {"alice": "analyst"})
    with make_client(alerts_db_url) as c:
        for alert_id in (1, 2, 3):
            c.post(f"/api/v1/alerts/{alert_id}/decision", headers=bearer(acc["alice"]),
                   json={"status": "false_positive", "note": f"n{alert_id}"})
    yield alerts_db_url


def test_audit_verify_names_the_first_edited_entry(decided_db: str) -> None:
    ok = fraud("audit", "verify", "--db", decided_db)
    assert ok.returncode == 0 and "chain intact" in ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1]) == {
        "ok": True, "entries": 5, "broken_seq": None, "broken_id": None, "reason": ""}
    engine = make_engine(decided_db)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE audit DISABLE TRIGGER audit_no_update_delete"))
            else:
                conn.execute(text("DROP TRIGGER audit_no_update"))
            conn.execute(text("UPDATE audit SET actor = 'mallory' WHERE seq = 4"))
    finally:
        engine.dispose()
    broken = fraud("audit", "verify", "--db", decided_db)
    assert broken.returncode == 1
    result = json.loads(broken.stdout.splitlines()[-1])
    assert (result["ok"], result["broken_seq"]) == (False, 4)
    assert "edited" in result["reason"] and "seq=4" in broken.stderr


def test_audit_verify_detects_a_removed_tail(decided_db: str) -> None:
    engine = make_engine(decided_db)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE audit DISABLE TRIGGER audit_no_update_delete"))
            else:
                conn.execute(text("DROP TRIGGER audit_no_delete"))
            conn.execute(text("DELETE FROM audit WHERE seq = 5"))
    finally:
        engine.dispose()
    broken = fraud("audit", "verify", "--db", decided_db)
    assert broken.returncode == 1
    assert json.loads(broken.stdout.splitlines()[-1])["broken_seq"] == 5


def test_the_database_refuses_to_change_audit_rows(decided_db: str) -> None:
    from sqlalchemy.exc import DatabaseError

    engine = make_engine(decided_db)
    try:
        statements = ["UPDATE audit SET actor = 'mallory' WHERE seq = 1",
                      "DELETE FROM audit WHERE seq = 1"]
        if engine.dialect.name == "postgresql":
            statements.append("TRUNCATE audit")
        for statement in statements:
            with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit")).scalar() == 5
    finally:
        engine.dispose()


# --- fraud users ----------------------------------------------------------------------------------


def test_fraud_users_add_list_disable_token(sqlite_db: str) -> None:
    added = fraud("users", "add", "carol", "--role", "supervisor", "--db", sqlite_db,
                  stdin="a long enough password\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout.splitlines()[-1]) == {"name": "carol", "role": "supervisor"}
    env_pw = fraud("users", "add", "dave", "--role", "analyst", "--db", sqlite_db,
                   env={"FRAUD_PASSWORD": "another long password"})
    assert env_pw.returncode == 0
    assert fraud("users", "add", "dave", "--role", "analyst", "--db", sqlite_db,
                 stdin="whatever whatever\n").returncode == 2
    assert fraud("users", "add", "eve", "--role", "root", "--db", sqlite_db,
                 stdin="whatever whatever\n").returncode == 2
    short = fraud("users", "add", "eve", "--role", "analyst", "--db", sqlite_db, stdin="short\n")
    assert short.returncode == 2 and "at least" in short.stderr
    token = fraud("users", "token", "carol", "--db", sqlite_db).stdout.strip().splitlines()[-1]
    assert token.startswith("fwb_")
    listed = json.loads(fraud("users", "list", "--db", sqlite_db).stdout.splitlines()[-1])
    assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [
        ("carol", "supervisor", False), ("dave", "analyst", False)]
    with make_client(sqlite_db) as c:
        h = {"Authorization": f"Bearer {token}"}
        assert c.get("/api/v1/alerts", headers=h).status_code == 200
        assert json.loads(fraud("users", "disable", "carol", "--db", sqlite_db)
                          .stdout.splitlines()[-1]) == {"name": "carol", "disabled": True}
        assert c.get("/api/v1/alerts", headers=h).status_code == 401
    engine = make_engine(sqlite_db)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM api_tokens")).scalar()
        hashes = conn.execute(text("SELECT password_hash FROM users")).scalars().all()
    engine.dispose()
    assert stored != token and len(str(stored)) == 64
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert fraud("audit", "verify", "--db", sqlite_db).returncode == 0


def test_sign_in_is_throttled_per_client_address(sqlite_db: str,
                                                 accounts_sqlite: dict[str, Account]) -> None:
    with make_client(sqlite_db, max_failures_per_client=4) as c:
        for name in ("alice", "bob", "sam", "sue"):  # one failure each, all from one client
            assert login(c, name, "not the password").status_code == 401
        assert login(c, "ada").status_code == 429


def test_alert_page_shows_the_cards_transactions_from_the_lake(
    sqlite_db: str, accounts_sqlite: dict[str, Account], tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.spec import arrow_schema

    lake = tmp_path / "bank"
    for day, rows in {"2024-05-20": [("L1", "C1", 11.11), ("L2", "C9", 99.99)],
                      "2024-06-01": [("L3", "C1", 33.33)],
                      "2024-04-01": [("L4", "C1", 44.44)]}.items():  # more than 30 days before
        folder = lake / f"date={day}"
        folder.mkdir(parents=True)
        stamp = datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)
        table = pa.table({
            "transaction_id": [r[0] for r in rows], "timestamp": [stamp] * len(rows),
            "customer_id": [r[1] for r in rows], "terminal_id": ["T7"] * len(rows),
            "amount": [r[2] for r in rows], "merchant_category": ["5411"] * len(rows),
            "country": ["FR"] * len(rows), "channel": ["pos"] * len(rows),
        }, schema=arrow_schema(labelled=False))
        pq.write_table(table, folder / "part.parquet")
    with make_client(sqlite_db, lake=lake) as c:
        login(c, "alice")
        page = c.get("/alerts/2")  # alert 2: card C1, 2024-06-01
        assert page.status_code == 200
        assert "11.11" in page.text and "33.33" in page.text
        assert "99.99" not in page.text and "44.44" not in page.text
