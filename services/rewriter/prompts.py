"""The plain and guided prompts (user messages; engines apply the chat template)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mindgap.answers import hide_final_answer

PLAIN_TEMPLATE = (
    "{question}\n\n"
    "Reason step by step, and put your final answer in \\boxed{{}}."
)
GUIDED_TEMPLATE = (
    "{question}\n\n"
    "Below is a worked solution to this problem by an expert, for reference only.\n"
    "<reference>\n{reference}\n</reference>\n\n"
    "Now solve the problem yourself, step by step, in your own words. Do not copy the "
    "reference and do not mention it. Put your final answer in \\boxed{{}}."
)

class TemplateError(ValueError):
    """A prompt template file lacks a placeholder or has a stray brace."""


@dataclass(frozen=True)
class PromptTemplates:
    """Templates for the plain prompt (``{question}``) and the guided prompt
    (``{question}`` and ``{reference}``); literal braces are doubled."""

    plain: str = PLAIN_TEMPLATE
    guided: str = GUIDED_TEMPLATE

    def __post_init__(self) -> None:
        for name, text, fields in (("plain", self.plain, ("question",)),
                                   ("guided", self.guided, ("question", "reference"))):
            missing = [f for f in fields if "{" + f + "}" not in text]
            if missing:
                raise TemplateError(f"{name} template lacks {{{missing[0]}}}")
            try:
                text.format(question="", reference="")
            except (KeyError, IndexError, ValueError) as exc:
                raise TemplateError(f"{name} template: {exc!r} (double literal braces)") from exc

    @classmethod
    def from_files(cls, plain: Path | None = None, guided: Path | None = None
                   ) -> PromptTemplates:
        """Defaults, overridden by whichever template files are given."""
        return cls(plain=plain.read_text(encoding="utf-8") if plain else PLAIN_TEMPLATE,
                   guided=guided.read_text(encoding="utf-8") if guided else GUIDED_TEMPLATE)

    def plain_prompt(self, question: str) -> str:
        return self.plain.format(question=question)

    def guided_prompt(self, question: str, solution: str, hide_answer: bool = False) -> str:
        reference = hide_final_answer(solution) if hide_answer else solution
        return self.guided.format(question=question, reference=reference)
