"""The REST API on memory:// in-process: DLQ browse/replay/delete/purge, jobs, queues, errors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import upnext
from upnext.testing import needs_modules

needs_modules("fastapi")

from upnext.server import create_app  # noqa: E402


class Env:
    """A memory:// worker with a failing and a working task, and a client on the app."""

    def __init__(self, url: str, worker: upnext.Worker, client: httpx.AsyncClient) -> None:
        self.url = url
        self.worker = worker
        self.client = client

    async def dead_letter(self, n: int = 1, fn: str = "boom") -> list[str]:
        """Make `n` failing jobs and wait for them to fail; their job ids."""
        task = self.worker.tasks[fn]
        futures = [await task.submit(i) for i in range(n)]
        for future in futures:
            with pytest.raises(upnext.TaskExecutionError):
                await future.result(timeout=5)
        return [f.job_id for f in futures]


def make_worker(url: str) -> upnext.Worker:
    """A worker on `url` whose `boom` always fails and `ok` doubles."""
    worker = upnext.Worker("q", broker=url, load_plugins=False)

    @worker.task(retries=0, name="boom")
    async def boom(n: int) -> None:
        raise ValueError(f"boom {n}")

    @worker.task(retries=0, name="other", queue="q2")
    async def other(n: int) -> None:
        raise KeyError(n)

    @worker.task(name="ok")
    async def ok(n: int) -> int:
        return n * 2

    return worker


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    url = f"memory://server-{uuid.uuid4().hex}"
    worker = make_worker(url)
    app = create_app(url, queues=["q", "q2"])
    transport = httpx.ASGITransport(app=app)
    async with (
        worker,
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        yield Env(url, worker, client)
        await app.state.backend.aclose()


async def test_entry_listed_shown_replayed_deleted(env: Env) -> None:
    """A failed job's entry goes through list, get, replay (new job id; again: 404), delete."""
    (job_id,) = await env.dead_letter()
    page = (await env.client.get("/api/v1/dlq")).json()
    (item,) = page["items"]
    assert page["next_cursor"] is None
    assert (item["job_id"], item["queue"], item["payload"]) == (
        job_id,
        "q",
        {"args": [], "kwargs": {"n": 0}},
    )
    assert item["error"]["type"] == "ValueError"
    assert "boom 0" in item["error"]["traceback"]
    assert [a["number"] for a in item["attempts"]] == [1]
    shown = (await env.client.get(f"/api/v1/dlq/{item['id']}")).json()
    assert shown == item
    replay = await env.client.post(f"/api/v1/dlq/{item['id']}/replay")
    assert replay.status_code == 200
    new_job = replay.json()["job_id"]
    assert new_job != job_id
    again = await env.client.post(f"/api/v1/dlq/{item['id']}/replay")
    assert again.status_code == 404
    assert again.json()["error"] == "not_found"
    await env.worker.join(timeout=5)  # the replayed job fails again: a new entry
    (second,) = (await env.client.get("/api/v1/dlq")).json()["items"]
    assert second["job_id"] == new_job
    assert second["replay_of"] == job_id
    assert (await env.client.delete(f"/api/v1/dlq/{second['id']}")).status_code == 204
    gone = await env.client.get(f"/api/v1/dlq/{second['id']}")
    assert gone.status_code == 404
    assert "Traceback" not in gone.text
    assert (await env.client.delete(f"/api/v1/dlq/{second['id']}")).status_code == 404


async def test_filters_and_paging(env: Env) -> None:
    """queue/function filters narrow the list; cursors walk every entry once."""
    await env.dead_letter(3)
    await env.dead_letter(1, fn="other")
    only = (await env.client.get("/api/v1/dlq", params={"queue": "q2"})).json()["items"]
    assert [i["function"] for i in only] == ["other"]
    by_fn = await env.client.get("/api/v1/dlq", params={"function": "boom"})
    assert len(by_fn.json()["items"]) == 3
    job_id = by_fn.json()["items"][1]["job_id"]
    by_job = (await env.client.get("/api/v1/dlq", params={"job_id": job_id})).json()["items"]
    assert [i["job_id"] for i in by_job] == [job_id]
    none = await env.client.get("/api/v1/dlq", params={"job_id": "no-such-job"})
    assert none.json()["items"] == []
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await env.client.get("/api/v1/dlq", params=params)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 4


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 501}, {"limit": "x"}, {"cursor": "junk"}]
)
async def test_bad_parameters_are_422_json(env: Env, params: dict[str, Any]) -> None:
    """Out-of-range limits and foreign cursors answer 422 with a one-line message."""
    response = await env.client.get("/api/v1/dlq", params=params)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid"
    assert "Traceback" not in response.text


async def test_purge_and_bulk_replay(env: Env) -> None:
    """Bulk replay takes a filter and reports each new job; purge answers a count."""
    await env.dead_letter(2)
    await env.dead_letter(2, fn="other")
    bulk = await env.client.post("/api/v1/dlq/replay", json={"queue": "q", "limit": 10})
    assert bulk.status_code == 200
    assert len(bulk.json()["replayed"]) == 2
    assert bulk.json()["skipped"] == {}
    purged = await env.client.request("DELETE", "/api/v1/dlq", params={"queue": "q2"})
    assert purged.json() == {"purged": 2}
    await env.worker.join(timeout=5)
    assert (await env.client.request("DELETE", "/api/v1/dlq")).json() == {"purged": 2}


async def test_jobs_report_final_status_or_unknown(env: Env) -> None:
    """A finished job's status and result come from the store; anything else is unknown."""
    done = await env.worker.tasks["ok"].submit(21)
    await done.result(timeout=5)
    (failed,) = await env.dead_letter()
    body = (await env.client.get(f"/api/v1/jobs/{done.job_id}")).json()
    assert (body["status"], body["result"], body["queue"]) == ("complete", 42, "q")
    body = (await env.client.get(f"/api/v1/jobs/{failed}", params={"queue": "q"})).json()
    assert body["status"] == "failed"
    assert body["error"]["type"] == "ValueError"
    unknown = (await env.client.get("/api/v1/jobs/nope")).json()
    assert unknown["status"] == "unknown"


async def test_queues_and_health(env: Env) -> None:
    """/queues counts per queue (dead included); /health names the scheme, not the URL."""
    await env.dead_letter(2)
    queues = {q["name"]: q for q in (await env.client.get("/api/v1/queues")).json()["queues"]}
    assert queues["q"]["dead"] == 2
    assert queues["q"]["ready"] == 0
    assert "q2" in queues
    health = await env.client.get("/api/v1/health")
    assert health.json() == {"status": "ok", "scheme": "memory", "dlq_access": "indexed"}
    assert env.url not in health.text


async def test_oversized_body_is_413(env: Env) -> None:
    """A body over the limit is refused before it is parsed."""
    big = {"queue": "x" * 70_000}
    response = await env.client.post("/api/v1/dlq/replay", json=big)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


@pytest.mark.parametrize("body", [{"limit": True}, {"limit": "10"}, {"limit": 2.5}, {"queue": 7}])
async def test_a_body_of_the_wrong_types_is_422_not_coerced(
    env: Env, body: dict[str, object]
) -> None:
    """A bulk replay's fields take only their schema's JSON types."""
    response = await env.client.post("/api/v1/dlq/replay", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid"


async def test_unknown_route_is_json_404(env: Env) -> None:
    """Routing errors are JSON too."""
    response = await env.client.get("/api/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_malformed_body_is_422_and_405_lists_every_method(env: Env) -> None:
    """Unparseable JSON is bad input (422); a wrong method names all the path's methods."""
    bad = await env.client.post(
        "/api/v1/dlq/replay", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 422
    wrong = await env.client.put("/api/v1/dlq")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "DELETE, GET"
    assert (await env.client.put("/api/v1/dlq/replay")).headers["allow"] == "POST"
