"""Policy versions: the trainer publishes its weights, the rewriter workers follow them.

A version is a folder of weights (``save_pretrained``: safetensors, config, tokenizer)
written atomically by the trainer, and its record in Redis: ``P:policy`` holds the newest,
``P:policy:log`` every one. Versions only grow; a publish that does not is refused (by
``lua/publish_policy.lua``, one transaction, so two trainers cannot interleave).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from mindgap.queue.store import Store


class PolicyVersion(BaseModel):
    """One published version of the policy."""

    version: int = Field(ge=1, description="1, 2, ...: the number of the publish.")
    path: str = Field(description="The folder of its weights (a from_pretrained folder).")
    step: int = Field(ge=0, description="The trainer's optimizer step when it was published.")
    published_at: float = Field(description="Unix time of the publish.")


class StaleVersionError(ValueError):
    """A publish whose version is not newer than the one published."""


class PolicyVersions:
    """Publish and read policy versions of one queue."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def publish(self, version: int, path: str, step: int) -> PolicyVersion:
        """Record ``version`` (its weights already complete at ``path``) as the newest."""
        record = PolicyVersion(version=version, path=path, step=step, published_at=time.time())
        keys = self.store.keys
        current = int(self.store.scripts.publish_policy(
            keys=[keys.policy, keys.policy_log],
            args=[version, path, step, record.published_at]))
        if current >= 0:
            raise StaleVersionError(f"policy version {version} is not newer than the "
                                    f"published {current}")
        return record

    def current(self) -> PolicyVersion | None:
        """The newest published version, or None before the first publish."""
        fields = self.store.redis.hgetall(self.store.keys.policy)
        return PolicyVersion.model_validate(fields) if fields else None

    def history(self, limit: int = 1000) -> list[PolicyVersion]:
        """Published versions, oldest first (at most ``limit``, the newest ones)."""
        entries = self.store.redis.xrevrange(self.store.keys.policy_log, count=limit)
        return [PolicyVersion.model_validate(fields) for _, fields in reversed(entries)]
