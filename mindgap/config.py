"""Settings read from ``MINDGAP_*`` environment variables (pydantic-settings), one class per
component and one variable per thing; the README's settings table lists them all.

Command-line flags generated from these classes (:mod:`mindgap.options`) override the
environment, which overrides the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Shared by every mindgap HTTP service and client."""

    model_config = SettingsConfigDict(env_prefix="MINDGAP_", extra="ignore")

    api_key: str | None = Field(default=None, description="Bearer key: services require it on "
                                "/v1/ routes when set; clients send it.")


class QueueSettings(BaseSettings):
    """Where the Redis job queue lives (rewriter service, workers, trainer, `mindgap queue`)."""

    model_config = SettingsConfigDict(env_prefix="MINDGAP_QUEUE_", extra="ignore")

    redis_url: str = Field(default="redis://127.0.0.1:6379/0",
                           description="The Redis that holds the queue.")
    prefix: str = Field(default="mindgap", min_length=1,
                        description="Key prefix of the queue's keys in Redis.")
    socket_timeout_s: float = Field(default=5.0, gt=0, le=300, description="Longest wait for "
                                    "one Redis reply; while Redis is away a request fails "
                                    "(503) within about this time.")


class VerifierSettings(BaseSettings):
    """The sandboxed verifier: its pool, its HTTP service, and where clients find it."""

    model_config = SettingsConfigDict(env_prefix="MINDGAP_VERIFIER_", extra="ignore")

    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                         description="Sandbox worker processes in the pool (default: cores).")
    timeout_s: float = Field(default=5.0, gt=0, description="Hard wall time per item, seconds.")
    memory_mb: int = Field(default=2048, ge=256, description="Address-space limit per worker.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024,
                                description="Largest accepted HTTP request body.")
    max_queued_per_client: int = Field(default=4096, ge=1, description="Most items one client "
                                       "(API key, else address) may have waiting or running; "
                                       "429 with Retry-After beyond.")
    url: str | None = Field(default=None, description="Verify through the verifier service at "
                            "this URL instead of a local sandbox pool (also gates the "
                            "rewriter's /readyz).")


class RewriterSettings(BaseSettings):
    """The rewriter HTTP service, and where clients find it."""

    model_config = SettingsConfigDict(env_prefix="MINDGAP_REWRITER_", extra="ignore")

    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024,
                                description="Largest accepted HTTP request body.")
    poll_interval_s: float = Field(default=0.2, gt=0, le=5, description="Longest pause between "
                                   "job polls of a synchronous POST /v1/rewrite.")
    url: str = Field(default="http://127.0.0.1:8000", description="The rewriter service that "
                     "`mindgap submit` and `mindgap results` talk to.")
    data_root: Path | None = Field(default=None, description="Server-side data sets "
                                   "(`dataset.path` of POST /v1/jobs) must lie under this "
                                   "folder, symlinks resolved; unset: server-side data sets are "
                                   "refused.")
    max_dataset_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="Largest "
                                   "server-side data set file.")
    max_job_items: int = Field(default=100_000, ge=1, description="Most problems in one job "
                               "(inline or from a data set); 413 beyond.")
    max_open_jobs: int = Field(default=100, ge=1, description="Most queued or running jobs "
                               "at once; 429 beyond.")
    job_ttl_s: float = Field(default=7 * 24 * 3600, gt=0, description="A finished job (its "
                             "status and results) expires this long after it ends.")


class ModelStoreSettings(BaseSettings):
    """Where prepared models are cached."""

    model_config = SettingsConfigDict(env_prefix="MINDGAP_", extra="ignore")

    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "mindgap",
                            description="Folder of prepared models (the default model's "
                            "safetensors conversion).")
