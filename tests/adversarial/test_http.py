"""What every mindgap service shares (``mindgap.http``), attacked in process: bearer tokens,
content types, 422 bodies against the OpenAPI schema, and the rewriter's answers while its
Redis is away (no addresses in them)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import redis
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from redis.backoff import NoBackoff
from redis.retry import Retry

from mindgap.config import RewriterSettings, ServiceSettings
from mindgap.http import bearer_auth, install_common
from mindgap.queue import Queue
from mindgap.rewriter import health
from mindgap.rewriter.app import create_app
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(30)


class Echo(BaseModel):
    text: str


def tiny_app() -> FastAPI:
    """One JSON route behind a bearer key, with install_common's pieces."""
    app = FastAPI()
    install_common(app, 4096)

    @app.post("/v1/echo", dependencies=[Depends(bearer_auth("secret-key"))])
    async def echo(body: Echo) -> Echo:
        return body

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(tiny_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def test_non_ascii_bearer_token_is_401(client: TestClient) -> None:
    for token in ("ключ", "sécret-key", "é"):
        reply = client.post("/v1/echo", json={"text": "x"},
                            headers={"Authorization": f"Bearer {token}".encode()})
        assert reply.status_code == 401, (token, reply.text)
    right = client.post("/v1/echo", json={"text": "x"},
                        headers={"Authorization": "Bearer secret-key"})
    assert right.status_code == 200, right.text


def test_non_json_body_is_415(client: TestClient) -> None:
    auth = {"Authorization": "Bearer secret-key"}
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        reply = client.post("/v1/echo", content=b'{"text": "x"}',
                            headers={**auth, "Content-Type": kind})
        assert reply.status_code == 415, (kind, reply.text)
        assert "application/json" in reply.json()["detail"]
    for kind in ("application/json", "application/json; charset=utf-8",
                 "application/problem+json"):
        reply = client.post("/v1/echo", content=b'{"text": "x"}',
                            headers={**auth, "Content-Type": kind})
        assert reply.status_code == 200, (kind, reply.text)
    untyped = client.post("/v1/echo", content=b'{"text": "x"}', headers=auth)
    assert untyped.status_code == 415  # FastAPI would not parse it either (strict)
    assert client.post("/v1/echo", headers=auth).status_code == 422  # no body: a clear 422


def _documented_422(app: FastAPI) -> Iterator[tuple[str, dict[str, Any]]]:
    """(operation, JSON schema) of every documented 422, with the components resolvable."""
    spec = app.openapi()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if "422" in operation["responses"]:
                content = operation["responses"]["422"]["content"]["application/json"]
                yield f"{method} {path}", {**content["schema"], "components":
                                           spec["components"]}


def _assert_conforms(app: FastAPI, body: dict[str, Any]) -> None:
    documented = list(_documented_422(app))
    assert documented
    for operation, schema in documented:
        assert "HTTPValidationError" not in schema["components"]["schemas"], operation
        jsonschema.validate(body, schema)


def test_422_bodies_match_the_openapi_schema(client: TestClient) -> None:
    auth = {"Authorization": "Bearer secret-key"}
    reply = client.post("/v1/echo", json={"text": 7}, headers=auth)
    assert reply.status_code == 422
    _assert_conforms(client.app, reply.json())  # type: ignore[arg-type]
    with pytest.raises(jsonschema.ValidationError):
        _assert_conforms(client.app, {"detail": [{"loc": ["body"], "msg": "x"}]})  # type: ignore[arg-type]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Redis)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


def _dead_queue(port: int, socket_timeout: float | None = None) -> Queue:
    client = redis.Redis(port=port, decode_responses=True, socket_timeout=socket_timeout,
                         socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    return Queue(client, "mgtest:dead", create_groups=False)


def test_redis_errors_do_not_show_addresses() -> None:
    port = free_port()  # nothing listens there
    app = create_app(_dead_queue(port), RewriterSettings(), ServiceSettings(api_key=None))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/jobs/abc"),
                             ("DELETE", "/v1/jobs/abc")):
            reply = test_client.request(method, path)
            assert reply.status_code == 503, (path, reply.text)
            assert reply.json()["detail"].startswith("queue unavailable")
            assert str(port) not in reply.text and "127.0.0.1" not in reply.text
        ready = test_client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"] == "unreachable: ConnectionError"
        assert str(port) not in ready.text


def test_readyz_names_an_empty_error(silent_port: int,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "READY_PROBE_TIMEOUT_S", 0.3)
    app = create_app(_dead_queue(silent_port, socket_timeout=5), RewriterSettings(),
                     ServiceSettings(api_key=None))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        ready = test_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] == "unreachable: TimeoutError"


def test_rewriter_422_bodies_match_its_openapi_schema() -> None:
    app = create_app(_dead_queue(free_port()), RewriterSettings(),
                     ServiceSettings(api_key=None))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        bad = test_client.post("/v1/jobs", json={"items": [{"id": "a"}]})
        path = test_client.get("/v1/jobs/x:done")
    assert bad.status_code == 422 and path.status_code == 422
    _assert_conforms(app, bad.json())
    _assert_conforms(app, path.json())
