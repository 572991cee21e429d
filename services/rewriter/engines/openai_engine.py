"""The OpenAI-compatible engine: any server with ``/v1/completions`` (vLLM's best of all).

Prompts are rendered and tokenized locally (``tokenizer``: the model's folder or hub name) and
sent as token ids, so the server adds no special tokens of its own. Samples come from
``/v1/completions`` with ``logprobs: 1`` and vLLM's ``return_tokens_as_token_ids: true``: each
token comes back as ``"token_id:<id>"`` with its log-probability in ``token_logprobs``. For
behavior log-probs (after temperature and top-p) a vLLM server must run with
``--logprobs-mode processed_logprobs``; its default returns raw ``log_softmax(z)``.

``score`` is exact by two routes, because vLLM's prompt log-probs ignore the temperature:

- temperature 1: one request with ``echo: true, logprobs: 0, max_tokens: 1`` on the prompt and
  the tokens; the echoed prompt log-probs are ``log_softmax(z)``;
- any other temperature: one row per scored token, each row its prefix, ``max_tokens: 1``
  at that temperature and top-p 1, with vLLM's ``logprob_token_ids`` naming the token to
  report. The sampler's processed log-probs are ``log_softmax(z / T)``. A server that rejects
  ``logprob_token_ids`` raises ``NotImplementedError``. This costs one prefill per token.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from mindgap.rewriter.engines.base import (
    Engine,
    PolicyReloadUnsupported,
    Sample,
    is_unit_temperature,
)
from mindgap.rewriter.engines.vllm_reload import RELOAD_EXTENSION
from mindgap.rewriter.model_store import DEFAULT_MODEL, resolve_model
from mindgap.rewriter.options import OpenAISeeds

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TOKEN_PREFIX = "token_id:"
_MAX_IDS_PER_ROW_BATCH = 16
"""Distinct ``logprob_token_ids`` per scoring request (vLLM's default --max-logprobs is 20)."""
_MAX_ROWS_PER_REQUEST = 64


class EngineRequestError(RuntimeError):
    """The server answered with an error that retrying will not fix."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


def _token_id(token: str) -> int:
    if not token.startswith(_TOKEN_PREFIX):
        raise RuntimeError(f"the server returned token {token!r}, not 'token_id:<id>': it "
                           "does not support return_tokens_as_token_ids (vLLM does)")
    return int(token[len(_TOKEN_PREFIX):])


def server_on_cpu(metrics: str) -> bool:
    """Whether a vLLM server's ``/metrics`` page shows it runs on CPU.

    vLLM publishes its cache config as ``vllm:cache_config_info``; on CPU the platform picks
    128-token KV blocks when none was asked for, where CUDA's default is 16. A page without
    that line (another server) is not taken for CPU.
    """
    line = next((row for row in metrics.splitlines()
                 if row.startswith("vllm:cache_config_info{")), "")
    return bool(re.search(r'[{,]block_size="128"', line)) and \
        'user_specified_block_size="False"' in line


class OpenAIEngine(Engine):
    """Sample through an OpenAI-compatible ``/v1/completions`` endpoint over HTTP.

    ``model`` is the served model name (``None`` or the default name: the server's first
    model); ``api_key`` defaults to ``$OPENAI_API_KEY``; ``tokenizer`` defaults to
    ``model`` when given, else the default model's folder. Connection errors and HTTP 408,
    429 and 5xx are retried ``max_retries`` times with exponential backoff from
    ``backoff_s``; prompts of one ``generate`` call go out concurrently (``max_concurrency``).
    ``seeds`` (``auto``, ``per-request``, ``server``) says whether requests carry seeds;
    ``auto`` resolves at start (:func:`server_on_cpu`), and ``per_request_seeds`` holds
    the outcome.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", model: str | None = None,
                 api_key: str | None = None, tokenizer: str | None = None,
                 policy_version: int = 0, timeout_s: float = 600.0, max_retries: int = 5,
                 backoff_s: float = 0.5, max_concurrency: int = 16,
                 seeds: OpenAISeeds = "auto") -> None:
        from transformers import AutoTokenizer

        root = base_url.rstrip("/")
        root = root.removesuffix("/v1")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.base_url = root
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max(1, max_concurrency)
        self.policy_version = policy_version
        self._client = httpx.Client(base_url=root, headers=headers,
                                    timeout=httpx.Timeout(timeout_s, connect=10.0))
        named = model not in (None, "", DEFAULT_MODEL)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(
            tokenizer or resolve_model(model if named else None))
        self.eos_token_id = self.tokenizer.eos_token_id
        self.model_name = str(model) if named else self._served_model()
        self.per_request_seeds = seeds == "per-request" or (
            seeds == "auto" and not server_on_cpu(self._metrics()))
        if not self.per_request_seeds:
            log.info("%s: no per-request seeds (%s); the server's --seed governs sampling",
                     root, "vLLM on CPU" if seeds == "auto" else "--openai-seeds server")

    def _metrics(self) -> str:
        """The server's Prometheus page ('' when it has none)."""
        try:
            response = self._client.get("/metrics")
        except httpx.TransportError:
            return ""
        return response.text if response.status_code == 200 else ""

    def _served_model(self) -> str:
        models = self._request("GET", "/v1/models").get("data") or []
        if not models:
            raise RuntimeError(f"{self.base_url}/v1/models lists no model")
        return str(models[0]["id"])

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
        """One JSON request, retried on connection errors and retryable statuses."""
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.request(method, path, json=payload)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    result: dict[str, Any] = response.json()
                    return result
                if response.status_code not in _RETRY_STATUS:
                    raise EngineRequestError(response.status_code, response.text)
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if attempt == self.max_retries:
                raise RuntimeError(f"{method} {self.base_url}{path} failed after "
                                   f"{attempt + 1} attempts: {problem}")
            delay = self.backoff_s * 2**attempt
            log.warning("%s %s: %s; retrying in %.1f s", method, path, problem, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def load_policy(self, path: str, version: int) -> None:
        """Load the weights of ``path`` into the server in place, through vLLM's weight-update
        endpoint: ``POST /collective_rpc`` calling mindgap's reload extension in every
        worker, then ``POST /reset_prefix_cache``. The server needs both (start it with
        ``VLLM_SERVER_DEV_MODE=1`` and ``--worker-extension-cls`` naming
        ``vllm_engine.RELOAD_EXTENSION``) and must see ``path`` (a shared volume).
        Otherwise :class:`PolicyReloadUnsupported`: the version stays."""
        try:
            response = self._client.post("/collective_rpc", json={
                "method": "reload_policy", "args": [path]})
        except httpx.TransportError as exc:
            raise RuntimeError(f"{self.base_url}/collective_rpc: {exc}") from exc
        if response.status_code in (404, 405):
            raise PolicyReloadUnsupported(
                f"{self.base_url} has no weight-update endpoint /collective_rpc (start vLLM "
                f"with VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls {RELOAD_EXTENSION})")
        if response.status_code >= 400:
            raise PolicyReloadUnsupported(
                f"{self.base_url}/collective_rpc could not load {path} (is the server started "
                f"with --worker-extension-cls {RELOAD_EXTENSION}?): HTTP "
                f"{response.status_code} {response.text[:300]}")
        self._client.post("/reset_prefix_cache").raise_for_status()
        self.policy_version = version
        log.info("%s: policy version %d loaded in place from %s", self.base_url, version, path)

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        """``n`` samples per prompt, one request per prompt; with per-request seeds prompt
        ``i`` gets seed ``seed + i * n`` (a vLLM server gives its ``j``-th sample
        ``seed + i * n + j``)."""
        def complete(index: int) -> list[Sample]:
            payload: dict[str, Any] = {
                "model": self.model_name, "prompt": self.tokenize(prompts[index]), "n": n,
                "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                "logprobs": 1, "return_tokens_as_token_ids": True}
            if seed is not None and self.per_request_seeds:
                payload["seed"] = seed + index * n
            choices = self._request("POST", "/v1/completions", payload)["choices"]
            if len(choices) != n:
                raise RuntimeError(f"asked for {n} samples, the server returned {len(choices)}")
            return [self._sample(choice) for choice in sorted(choices, key=lambda c: c["index"])]

        return self._map(complete, range(len(prompts)))

    @staticmethod
    def _sample(choice: dict[str, Any]) -> Sample:
        logprobs = choice.get("logprobs") or {}
        ids = [_token_id(token) for token in logprobs.get("tokens") or []]
        values = logprobs.get("token_logprobs") or []
        if len(values) != len(ids) or any(v is None for v in values):
            raise RuntimeError("the server returned no log-prob for some sampled tokens")
        return Sample(choice["text"], ids, [float(v) for v in values],
                      choice.get("finish_reason") or "length")

    def _score_tokens(self, prompt_ids: list[int], token_ids: list[int],
                      temperature: float) -> list[float]:
        if is_unit_temperature(temperature):
            return self._score_echo(prompt_ids, token_ids)
        return self._score_rows(prompt_ids, token_ids, temperature)

    def _score_echo(self, prompt_ids: list[int], token_ids: list[int]) -> list[float]:
        """``log_softmax(z)`` from the echoed prompt log-probs."""
        payload = {"model": self.model_name, "prompt": prompt_ids + token_ids, "echo": True,
                   "max_tokens": 1, "logprobs": 0, "temperature": 1.0,
                   "return_tokens_as_token_ids": True}
        logprobs = self._request("POST", "/v1/completions", payload)["choices"][0]["logprobs"]
        start, end = len(prompt_ids), len(prompt_ids) + len(token_ids)
        echoed = [_token_id(t) for t in logprobs["tokens"][start:end]]
        values = logprobs["token_logprobs"][start:end]
        if echoed != token_ids or any(v is None for v in values):
            raise RuntimeError("the server's echoed tokens do not match the tokens scored")
        return [float(v) for v in values]

    def _score_rows(self, prompt_ids: list[int], token_ids: list[int],
                    temperature: float) -> list[float]:
        """``log_softmax(z / T)``: one row per token, the sampler's processed log-probs."""
        batches: list[list[int]] = [[]]
        for i in range(len(token_ids)):
            ids = {token_ids[j] for j in batches[-1]} | {token_ids[i]}
            if len(batches[-1]) >= _MAX_ROWS_PER_REQUEST or len(ids) > _MAX_IDS_PER_ROW_BATCH:
                batches.append([])
            batches[-1].append(i)

        def run(rows: list[int]) -> list[float]:
            targets = sorted({token_ids[i] for i in rows})
            payload = {"model": self.model_name,
                       "prompt": [prompt_ids + token_ids[:i] for i in rows],
                       "max_tokens": 1, "temperature": temperature, "top_p": 1.0,
                       "logprobs": 1, "logprob_token_ids": targets,
                       "return_tokens_as_token_ids": True}
            try:
                choices = self._request("POST", "/v1/completions", payload)["choices"]
            except EngineRequestError as exc:
                if exc.status in (400, 422):
                    raise NotImplementedError(
                        "this server cannot score at temperature != 1: it rejected vLLM's "
                        f"logprob_token_ids ({exc}); score at temperature 1, or use a vLLM "
                        "server") from exc
                raise
            values = []
            for row, choice in zip(rows, sorted(choices, key=lambda c: c["index"]), strict=True):
                top = choice["logprobs"]["top_logprobs"][0]
                values.append(float(top[f"{_TOKEN_PREFIX}{token_ids[row]}"]))
            return values

        return [v for part in self._map(run, batches) for v in part]

    def close(self) -> None:
        self._client.close()
