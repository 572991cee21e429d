"""Pydantic models that every part of mindgap agrees on (the data contract)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_VERIFY_BATCH = 1024
"""Largest number of items one ``/v1/verify/batch`` request may carry."""


def _valid_unicode(text: str) -> str:
    """Reject unpaired surrogates (valid JSON escapes, but not text): they cannot be encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid Unicode at character {exc.start}: unpaired surrogate") from exc
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
"""A string that is valid Unicode text."""


class VerifyReason(StrEnum):
    """Why the verifier reached its verdict."""

    equal = "equal"
    not_equal = "not_equal"
    no_answer = "no_answer"
    timeout = "timeout"
    parse_error = "parse_error"
    too_long = "too_long"
    error = "error"


class VerifyRequest(BaseModel):
    """One model response to check against a reference (bare answer or full solution)."""

    model_config = ConfigDict(extra="forbid")

    response: Text = Field(description="The model's response; only its last 4 KiB are examined.")
    reference: Text = Field(
        description="A bare answer such as `18` or `\\frac{1}{2}`, or a full expert solution "
        "whose final answer is extracted the same way as the response's."
    )


class VerifyBatchRequest(BaseModel):
    """Up to ``MAX_VERIFY_BATCH`` verification items, answered in order."""

    model_config = ConfigDict(extra="forbid")

    items: list[VerifyRequest] = Field(min_length=1, max_length=MAX_VERIFY_BATCH)


class VerifyResult(BaseModel):
    """The verdict on one response."""

    correct: bool
    extracted: str | None = Field(description="The final answer found in the response.")
    reference: str = Field(description="The reference answer compared against.")
    reason: VerifyReason
    elapsed_ms: float = Field(ge=0)
    truncated: bool = Field(
        default=False, description="True when the response was longer than the examined tail."
    )
    detail: str | None = Field(default=None, description="Extra context for errors.")


class VerifyBatchResponse(BaseModel):
    """Results of a batch, in request order."""

    results: list[VerifyResult]
