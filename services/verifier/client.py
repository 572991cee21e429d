"""``VerifierClient``: the verifier service over HTTP, with the ``LocalVerifier`` interface."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from mindgap.schemas import (
    MAX_VERIFY_BATCH,
    VerifyBatchRequest,
    VerifyBatchResponse,
    VerifyRequest,
    VerifyResult,
)

_RETRY_STATUS = {429, 502, 503, 504}


class VerifierError(RuntimeError):
    """The service refused a request (4xx) or kept failing after every retry."""


class VerifierClient:
    """Call a verifier service; retries connection errors and 429/5xx with backoff."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 60.0,
                 retries: int = 4, backoff_s: float = 0.25) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._args: dict[str, Any] = {"base_url": base_url.rstrip("/"), "headers": headers,
                                      "timeout": timeout_s}
        self.retries = retries
        self.backoff_s = backoff_s
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    def _sync(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(**self._args)
        return self._client

    def _async(self) -> httpx.AsyncClient:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(**self._args)
        return self._aclient

    def _delay(self, attempt: int) -> float:
        return self.backoff_s * (2**attempt)

    @staticmethod
    def _outcome(response: httpx.Response) -> bytes:
        """The raw JSON body, or raise: ``VerifierError`` for a 4xx, a retryable error
        otherwise."""
        if response.status_code in _RETRY_STATUS or response.status_code >= 500:
            raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request,
                                        response=response)
        if response.status_code >= 400:
            raise VerifierError(f"HTTP {response.status_code}: {response.text[:500]}")
        return response.content

    def _post(self, path: str, body: dict[str, Any]) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                return self._outcome(self._sync().post(path, json=body))
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if attempt == self.retries:
                    raise VerifierError(f"{path} failed after {attempt + 1} tries: {exc}") from exc
                time.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    async def _apost(self, path: str, body: dict[str, Any]) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                return self._outcome(await self._async().post(path, json=body))
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if attempt == self.retries:
                    raise VerifierError(f"{path} failed after {attempt + 1} tries: {exc}") from exc
                await asyncio.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    @staticmethod
    def _chunks(items: Sequence[VerifyRequest]) -> list[dict[str, Any]]:
        return [VerifyBatchRequest(items=list(items[i : i + MAX_VERIFY_BATCH])).model_dump()
                for i in range(0, len(items), MAX_VERIFY_BATCH)]

    def verify(self, response: str, reference: str) -> VerifyResult:
        """Verify one response against one reference."""
        body = VerifyRequest(response=response, reference=reference).model_dump()
        return VerifyResult.model_validate_json(self._post("/v1/verify", body))

    def verify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]:
        """Verify many items (sent in chunks of at most 1024); results in input order."""
        results: list[VerifyResult] = []
        for chunk in self._chunks(items):
            results += VerifyBatchResponse.model_validate_json(
                self._post("/v1/verify/batch", chunk)).results
        return results

    async def averify(self, response: str, reference: str) -> VerifyResult:
        """Async form of :meth:`verify`."""
        body = VerifyRequest(response=response, reference=reference).model_dump()
        return VerifyResult.model_validate_json(await self._apost("/v1/verify", body))

    async def averify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]:
        """Async form of :meth:`verify_batch`; chunks are sent concurrently."""
        replies = await asyncio.gather(*(self._apost("/v1/verify/batch", chunk)
                                         for chunk in self._chunks(items)))
        return [r for reply in replies
                for r in VerifyBatchResponse.model_validate_json(reply).results]

    def close(self) -> None:
        """Close the sync connection pool (the async one closes in ``aclose``)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close both connection pools."""
        self.close()
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None

    def __enter__(self) -> VerifierClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
