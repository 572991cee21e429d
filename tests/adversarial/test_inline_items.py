"""Inline ``items`` get the checks a data set's rows get: a 422 naming ``items.N.field`` at job
creation, not a 202 and then a dead letter. Through the real app over a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mindgap.config import RewriterSettings, ServiceSettings
from mindgap.queue import Queue
from mindgap.rewriter.app import create_app


@pytest.fixture
def client(queue: Queue) -> Iterator[TestClient]:
    with TestClient(create_app(queue, RewriterSettings(), ServiceSettings(api_key=None))) as app:
        yield app


def item(i: int, **changes: Any) -> dict[str, Any]:
    return {"id": f"p{i}", "question": f"What is {i} + {i}?",
            "solution": f"{i} + {i} = {2 * i}.", "answer": str(2 * i), **changes}


GOOD = [item(0), item(1, answer=None, solution="So \\boxed{2}."),
        item(2, answer=None, solution="1 + 1 = 2\n#### 2"), item(3, answer="  7 ")]
"""Each has a reference answer: given, from the last \\boxed{}, from the #### line."""

BAD = [item(0),
       item(1, answer=None),                       # no answer and none in the solution
       item(2, answer="   "),                      # a blank answer is no answer
       item(3, question="  \n "),                  # blank, as a data set row would be
       item(4, solution="\t", answer="4"),
       item(5, id=" ")]


def fields(reply: Any) -> list[str]:
    assert reply.status_code == 422, reply.text
    return [e["field"] for e in reply.json()["errors"]]


def test_jobs_reject_items_without_a_reference_answer(client: TestClient) -> None:
    assert fields(client.post("/v1/jobs", json={"items": BAD})) == [
        "items.1.answer", "items.2.answer", "items.3.question", "items.4.solution",
        "items.5.id"]
    reply = client.post("/v1/jobs", json={"items": BAD[:2]})
    assert reply.json()["detail"].startswith("items.1.answer: no reference answer")
    ok = client.post("/v1/jobs", json={"items": GOOD, "feed_trainer": False})
    assert ok.status_code == 202, ok.text
    assert ok.json()["total"] == len(GOOD)


def test_duplicates_and_answers_are_named_together(client: TestClient) -> None:
    reply = client.post("/v1/jobs", json={"items": [item(0), item(0, answer=None)]})
    assert fields(reply) == ["items.1.id", "items.1.answer"]


def test_sync_rewrite_rejects_items_without_a_reference_answer(client: TestClient) -> None:
    reply = client.post("/v1/rewrite", json={"items": BAD[:3], "timeout_s": 1})
    assert fields(reply) == ["items.1.answer", "items.2.answer"]
    waited = client.post("/v1/rewrite", json={"items": GOOD, "timeout_s": 1})
    # Past the checks: no worker here, so 503 at once (no job is left queued).
    assert waited.status_code == 503 and "no rewriter worker" in waited.text, waited.text
