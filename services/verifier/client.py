"""``VerifierClient``: the verifier service over HTTP, with the ``LocalVerifier`` interface."""

from __future__ import annotations

import asyncio
import contextlib
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
BATCH_PATH = "/v1/verify/batch"
MAX_RETRY_AFTER_S = 30.0
"""Longest pause a server's ``Retry-After`` can impose between two tries."""


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

    def _delay(self, attempt: int, exc: Exception) -> float:
        """The pause before the next try: exponential backoff, or the server's
        ``Retry-After`` when it asks for longer (capped)."""
        delay = self.backoff_s * (2**attempt)
        if isinstance(exc, httpx.HTTPStatusError):
            with contextlib.suppress(ValueError):
                asked = float(exc.response.headers.get("retry-after", ""))
                delay = max(delay, min(asked, MAX_RETRY_AFTER_S))
        return delay

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
                time.sleep(self._delay(attempt, exc))
        raise AssertionError("unreachable")

    async def _apost(self, path: str, body: dict[str, Any]) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                return self._outcome(await self._async().post(path, json=body))
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if attempt == self.retries:
                    raise VerifierError(f"{path} failed after {attempt + 1} tries: {exc}") from exc
                await asyncio.sleep(self._delay(attempt, exc))
        raise AssertionError("unreachable")

    def _send(self, items: Sequence[VerifyRequest], group: list[int]) -> list[VerifyResult]:
        """One try of ``/v1/verify/batch`` on the items at ``group``."""
        body = VerifyBatchRequest(items=[items[i] for i in group]).model_dump()
        return VerifyBatchResponse.model_validate_json(
            self._outcome(self._sync().post(BATCH_PATH, json=body))).results

    async def _asend(self, items: Sequence[VerifyRequest], group: list[int]
                     ) -> list[VerifyResult]:
        body = VerifyBatchRequest(items=[items[i] for i in group]).model_dump()
        return VerifyBatchResponse.model_validate_json(
            self._outcome(await self._async().post(BATCH_PATH, json=body))).results

    def verify(self, response: str, reference: str) -> VerifyResult:
        """Verify one response against one reference."""
        body = VerifyRequest(response=response, reference=reference).model_dump()
        return VerifyResult.model_validate_json(self._post("/v1/verify", body))

    def verify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]:
        """Verify many items (sent in chunks of at most 1024); results in input order.

        After a failed try only the unanswered items are sent again, each failed chunk
        split in halves (so one bad item does not hold up the answers of the others)."""
        batch = _Batch(len(items))
        for attempt in range(self.retries + 1):
            for group in batch.pending():
                try:
                    batch.answer(group, self._send(items, group))
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    batch.fail(group, exc)
            if batch.done():
                return batch.results()
            time.sleep(batch.next_round(attempt, self))
        raise AssertionError("unreachable")

    async def averify(self, response: str, reference: str) -> VerifyResult:
        """Async form of :meth:`verify`."""
        body = VerifyRequest(response=response, reference=reference).model_dump()
        return VerifyResult.model_validate_json(await self._apost("/v1/verify", body))

    async def averify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]:
        """Async form of :meth:`verify_batch`; chunks are sent concurrently."""
        batch = _Batch(len(items))

        async def one(group: list[int]) -> None:
            try:
                batch.answer(group, await self._asend(items, group))
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                batch.fail(group, exc)

        for attempt in range(self.retries + 1):
            await asyncio.gather(*(one(group) for group in batch.pending()))
            if batch.done():
                return batch.results()
            await asyncio.sleep(batch.next_round(attempt, self))
        raise AssertionError("unreachable")

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


class _Batch:
    """Which items of a batch are answered; the groups (index lists) still to send."""

    def __init__(self, size: int) -> None:
        self._results: list[VerifyResult | None] = [None] * size
        self._pending = [list(range(i, min(i + MAX_VERIFY_BATCH, size)))
                         for i in range(0, size, MAX_VERIFY_BATCH)]
        self._failed: list[list[int]] = []
        self._error: Exception | None = None

    def pending(self) -> list[list[int]]:
        return self._pending

    def answer(self, group: list[int], results: list[VerifyResult]) -> None:
        for index, result in zip(group, results, strict=True):
            self._results[index] = result

    def fail(self, group: list[int], exc: Exception) -> None:
        self._failed.append(group)
        self._error = exc

    def done(self) -> bool:
        return not self._failed

    def results(self) -> list[VerifyResult]:
        return [r for r in self._results if r is not None]

    def next_round(self, attempt: int, client: VerifierClient) -> float:
        """Queue the failed groups again, split in halves; the pause before sending them.
        Raises ``VerifierError`` when the tries are used up."""
        failed, self._failed = self._failed, []
        assert self._error is not None
        if attempt == client.retries:
            unanswered = sum(map(len, failed))
            raise VerifierError(f"{BATCH_PATH} failed after {attempt + 1} tries "
                                f"({unanswered} items unanswered): {self._error}") from self._error
        self._pending = [half for group in failed
                         for half in (group[: (len(group) + 1) // 2], group[(len(group) + 1) // 2:])
                         if half]
        return client._delay(attempt, self._error)
