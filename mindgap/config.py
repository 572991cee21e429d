"""Settings read from ``MINDGAP_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class VerifierSettings(BaseSettings):
    """How the sandboxed verifier pool and its HTTP service behave."""

    model_config = SettingsConfigDict(env_prefix="MINDGAP_VERIFIER_", extra="ignore")

    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                         description="Sandbox worker processes in the pool.")
    timeout_s: float = Field(default=5.0, gt=0, description="Hard wall time per item.")
    memory_mb: int = Field(default=2048, ge=256, description="Address-space limit per worker.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024,
                                description="Largest accepted HTTP request body.")
    url: str | None = Field(default=None,
                            description="Use a remote verifier service at this URL instead "
                            "of a local pool.")


class ServiceSettings(BaseSettings):
    """Settings shared by every mindgap HTTP service."""

    model_config = SettingsConfigDict(env_prefix="MINDGAP_", extra="ignore")

    api_key: str | None = Field(default=None,
                                description="Bearer key required on /v1/ routes when set.")
