"""The verifier service as a real uvicorn process, called over HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from mindgap.schemas import VerifyRequest
from mindgap.verifier.client import VerifierClient, VerifierError
from tests.conftest import Service, run_schemathesis

AUTH = {"Authorization": "Bearer test-key"}


def test_v1_routes_need_the_key(verifier_service: Service) -> None:
    body = {"response": "\\boxed{2}", "reference": "2"}
    missing = httpx.post(f"{verifier_service.url}/v1/verify", json=body)
    wrong = httpx.post(f"{verifier_service.url}/v1/verify", json=body,
                       headers={"Authorization": "Bearer nope"})
    batch = httpx.post(f"{verifier_service.url}/v1/verify/batch", json={"items": [body]})
    assert (missing.status_code, wrong.status_code, batch.status_code) == (401, 401, 401)
    assert "API key" in missing.json()["detail"]
    assert httpx.get(f"{verifier_service.url}/healthz").status_code == 200


def test_verify_one(verifier_service: Service) -> None:
    reply = httpx.post(f"{verifier_service.url}/v1/verify", headers=AUTH,
                       json={"response": "So the answer is \\boxed{\\dfrac{1}{2}}.",
                             "reference": "0.5"})
    assert reply.status_code == 200
    assert reply.json()["correct"] is True and reply.json()["reason"] == "equal"


def test_batch_in_order_and_capped(verifier_service: Service) -> None:
    items = [{"response": f"#### {i}", "reference": str(i + i % 2)} for i in range(200)]
    reply = httpx.post(f"{verifier_service.url}/v1/verify/batch", headers=AUTH,
                       json={"items": items}, timeout=60)
    assert reply.status_code == 200
    assert [r["correct"] for r in reply.json()["results"]] == [i % 2 == 0 for i in range(200)]
    too_many = httpx.post(f"{verifier_service.url}/v1/verify/batch", headers=AUTH,
                          json={"items": items * 6})
    assert too_many.status_code == 422
    assert "items" in too_many.json()["detail"]


@pytest.mark.parametrize(("body", "field"), [
    ({"reference": "2"}, "response"),
    ({"response": 3, "reference": "2"}, "response"),
    ({"response": "x", "reference": "2", "extra": 1}, "extra"),
    ('{"response": "\\ud800 unpaired", "reference": "2"}', "response"),
])
def test_invalid_bodies_name_the_field(verifier_service: Service, body: dict[str, object] | str,
                                       field: str) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    reply = httpx.post(f"{verifier_service.url}/v1/verify", content=raw,
                       headers={**AUTH, "Content-Type": "application/json"})
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith(field)


def test_oversized_bodies_get_413(verifier_service: Service) -> None:
    big = {"response": "a" * (5 * 1024 * 1024), "reference": "1"}
    declared = httpx.post(f"{verifier_service.url}/v1/verify", headers=AUTH, json=big)
    assert declared.status_code == 413

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        yield b'{"response": "'
        for _ in range(5):
            yield b"a" * (1024 * 1024)
        yield b'", "reference": "1"}'

    streamed = httpx.post(f"{verifier_service.url}/v1/verify", content=chunks(),
                          headers={**AUTH, "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert "larger than" in streamed.json()["detail"]


def test_metrics_count_requests_and_verdicts(verifier_service: Service) -> None:
    httpx.post(f"{verifier_service.url}/v1/verify", headers=AUTH,
               json={"response": "no answer here", "reference": "2"})
    text = httpx.get(f"{verifier_service.url}/metrics").text
    assert 'mindgap_verifier_verdicts_total{reason="no_answer"}' in text
    assert 'mindgap_verifier_requests_total{route="/v1/verify",status="200"}' in text
    assert "mindgap_verifier_request_seconds_bucket" in text
    assert "mindgap_verifier_worker_restarts_total" in text
    assert "mindgap_verifier_timeouts_total" in text


def test_client_sync_and_async(verifier_service: Service) -> None:
    import asyncio

    items = [VerifyRequest(response=f"\\boxed{{{i}}}", reference=str(i)) for i in range(1500)]
    with VerifierClient(verifier_service.url, api_key="test-key") as client:
        assert client.verify("The answer is 7.", "7").correct
        assert all(r.correct for r in client.verify_batch(items))  # two chunks
    async def run() -> list[bool]:
        client = VerifierClient(verifier_service.url, api_key="test-key")
        try:
            return [r.correct for r in await client.averify_batch(items[:50])]
        finally:
            await client.aclose()
    assert all(asyncio.run(run()))
    with pytest.raises(VerifierError, match="401"):
        VerifierClient(verifier_service.url).verify("\\boxed{1}", "1")


def test_client_gives_up_on_a_dead_server() -> None:
    client = VerifierClient("http://127.0.0.1:9", retries=2, backoff_s=0.01)
    with pytest.raises(VerifierError, match="after 3 tries"):
        client.verify("\\boxed{1}", "1")


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(verifier_service: Service) -> None:
    run_schemathesis(verifier_service.url, max_examples=80, timeout_s=600)


def test_docs_are_served_from_the_service(verifier_service: Service) -> None:
    # No CDN: the pages name only this server's files, and it serves them.
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = httpx.get(f"{verifier_service.url}{page}").text
        assert f'src="/docs/assets/{asset}"' in html and "cdn.jsdelivr" not in html
        served = httpx.get(f"{verifier_service.url}/docs/assets/{asset}")
        assert served.status_code == 200 and len(served.content) > 100_000
