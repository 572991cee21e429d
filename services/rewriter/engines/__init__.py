"""Generation engines: ``transformers`` (default), ``vllm`` (in-process), ``openai`` (HTTP)."""

from __future__ import annotations

from typing import Any

from mindgap.rewriter.engines.base import Engine, PolicyReloadUnsupported, Sample
from mindgap.rewriter.options import EngineKind

__all__ = ["Engine", "EngineKind", "PolicyReloadUnsupported", "Sample", "make_engine"]


def make_engine(kind: EngineKind, model: str | None = None, **options: Any) -> Engine:
    """Build an engine by name; heavy libraries are imported only for the one chosen."""
    if kind == "transformers":
        from mindgap.rewriter.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model=model, **options)
    if kind == "vllm":
        from mindgap.rewriter.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model=model, **options)
    if kind == "openai":
        from mindgap.rewriter.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(model=model, **options)
    raise ValueError(f"unknown engine {kind!r}: choose transformers, vllm or openai")
