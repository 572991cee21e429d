"""Pydantic models that every part of mindgap agrees on (the data contract)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

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


# --- Rewriting: problems in, aligned examples out -------------------------------------

Source = Literal["self", "guided", "expert"]
"""Where a kept response came from (DESIGN.md): the model alone, the model with the
expert solution as a hint, or the expert solution itself."""

SOURCES: tuple[Source, ...] = get_args(Source)
"""The three source names, in DESIGN.md's order of preference."""

PromptKind = Literal["plain", "guided"]


class Problem(BaseModel):
    """A math problem with an expert solution and, when known, its reference answer."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=512)
    question: Text = Field(min_length=1)
    solution: Text = Field(min_length=1, description="The expert solution y*.")
    answer: Text | None = Field(
        default=None, description="Reference answer; derived from the solution when absent "
        "(last \\boxed{}, else the GSM8K `#### n` line).")
    metadata: dict[str, Any] = Field(default_factory=dict)




class RewriteOptions(BaseModel):
    """How the aligner samples and chooses (CLI flags, job options and API fields alike)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k_self: int = Field(default=4, ge=0, le=64, description="Most plain samples per problem.")
    k_guided: int = Field(default=4, ge=0, le=64, description="Most guided samples per problem.")
    round_size: int = Field(default=1, ge=1, le=64, description="Samples per problem per "
                            "round; sampling stops at the first round with a correct one.")
    temperature: float = Field(default=1.0, gt=0.0, le=4.0, description="Sampling "
                               "temperature; the recorded behavior log-probs are those of "
                               "the tempered distribution.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling: keep the "
                         "smallest set of tokens with this much probability mass.")
    max_tokens: int = Field(default=512, ge=1, le=32768, description="Most tokens per "
                            "response (longer ones are cut and rarely verify).")
    seed: int = Field(default=0, ge=0, description="Seed of sampling and of the random choice "
                      "among correct responses.")
    choose: Literal["random", "likeliest"] = Field(
        default="random", description="Among correct responses: a seeded random one, or the "
        "highest mean token log-prob.")
    hide_answer: bool = Field(default=False, description="The guided prompt shows the "
                              "reference without its final answer (off, as in the paper).")
    copy_min_chars: int = Field(default=60, ge=1, description="A guided response sharing a "
                                "substring this long with the reference is a copy.")
    reject_cut: bool = Field(default=True, description="Reject responses cut at --max-tokens "
                             "(they end mid-thought, often looping after an early answer).")
    reject_repetition: bool = Field(default=True, description="Reject degenerate repetition: "
                                    "responses whose share of repeated 4-word n-grams is over "
                                    "--repetition-max-share.")
    repetition_max_share: float = Field(default=0.3, gt=0.0, lt=1.0, description="Most share "
                                        "of a response's 4-word n-grams that may repeat an "
                                        "earlier one.")
    check_working: bool = Field(default=True, description="Reject guided responses whose shown "
                                "working contradicts their answer: a wrong calculation, or an "
                                "answer no shown calculation reaches.")


class SamplingParams(BaseModel):
    """How responses were sampled: the sampling fields of the ``RewriteOptions`` in force."""

    temperature: float = Field(ge=0.0, description="Sampling temperature.")
    top_p: float = Field(gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(ge=1, description="Most tokens per response.")
    seed: int = Field(description="Seed of sampling.")

    @classmethod
    def of(cls, options: RewriteOptions) -> SamplingParams:
        """The sampling part of ``options``."""
        return cls(temperature=options.temperature, top_p=options.top_p,
                   max_tokens=options.max_tokens, seed=options.seed)


class Behavior(BaseModel):
    """The behavior policy of a kept model response: what importance sampling needs."""

    logprobs: list[float] = Field(
        description="Per response token, its log-probability under the distribution actually "
        "sampled from (after temperature and top-p).")
    prompt_kind: PromptKind
    model: str
    policy_version: int = 0
    sampling: SamplingParams
    answer_shown: bool | None = Field(
        default=None, description="Guided prompts only: whether the reference's final answer "
        "was visible in the hint (False with hide_answer).")


GateName = Literal["cut", "repetition", "copied", "no_working", "wrong_calculation",
                   "answer_not_derived"]
"""The quality gates (``mindgap.rewriter.gates``), in the order they run."""


class GateCounts(BaseModel):
    """Verified responses of one problem that a quality gate rejected, per gate."""

    cut: int = Field(default=0, description="Cut at max_tokens.")
    repetition: int = Field(default=0, description="Degenerate repetition.")
    copied: int = Field(default=0, description="Guided: copies the reference verbatim.")
    no_working: int = Field(default=0, description="Guided: no number before the answer "
                            "(the answer alone, as read from the hint).")
    wrong_calculation: int = Field(default=0, description="Guided: a shown calculation is "
                                   "wrong.")
    answer_not_derived: int = Field(default=0, description="Guided: no shown calculation "
                                    "reaches the answer.")

    def add(self, gate: GateName) -> None:
        """Count one rejection by ``gate``."""
        setattr(self, gate, getattr(self, gate) + 1)


class AttemptCounts(BaseModel):
    """How much sampling a problem took."""

    self_samples: int = 0
    self_rounds: int = 0
    self_correct: int = 0
    guided_samples: int = 0
    guided_rounds: int = 0
    guided_correct: int = 0
    rejected: GateCounts = Field(default_factory=lambda: GateCounts(),
                                 description="Verified responses not kept, by the quality "
                                 "gate that rejected them.")


class Timings(BaseModel):
    """Seconds spent on a problem (shared batch time is split evenly between its problems)."""

    generate_s: float = 0.0
    verify_s: float = 0.0


class AlignedExample(BaseModel):
    """One training example: the plain prompt and the response mindgap kept for it."""

    id: str = Field(description="Unique example id: problem id and policy version.")
    problem_id: str
    prompt: str = Field(description="The chat-templated plain prompt the trainer uses.")
    response: str
    response_token_ids: list[int]
    source: Source
    reference_answer: str
    expert_solution: str = Field(description="The original expert solution y*, for comparison.")
    behavior: Behavior | None = Field(description="None for expert fallbacks.")
    attempts: AttemptCounts
    timings: Timings


SampleVerdict = Literal["kept", "correct", "rejected", "incorrect"]
"""A sample's fate: the one kept, verified but not chosen, verified but failing a quality
gate, or not verified correct."""


class SampleRecord(BaseModel):
    """One sampled response with its verdict: a line of ``rewrite --samples-out``."""

    problem_id: str
    prompt_kind: PromptKind
    round: int = Field(description="1-based sampling round of this prompt kind.")
    text: str
    tokens: int = Field(description="Generated tokens.")
    finish_reason: str = Field(description="`stop` (end of sequence) or `length` (cut at "
                               "max_tokens).")
    verdict: SampleVerdict
    reason: str = Field(description="The verifier's reason (`equal`, `not_equal`, "
                        "`no_answer`, ...) or, when rejected, the quality gate's name.")
    extracted: str | None = Field(description="The final answer the verifier read.")
    detail: str | None = Field(default=None, description="What the gate or verifier saw.")
