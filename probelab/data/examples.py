"""The unit of training and evaluation data: a prompt, the response to learn, and the answer to check."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One example. ``prompt`` + ``response`` is what SFT trains on (loss on the response only);
    ``answer`` is the exact string an accuracy eval compares against. For continual pretraining on
    plain text, ``prompt`` is empty and ``response`` is the text (loss on every token)."""

    prompt: str
    response: str
    answer: str = ""

    @property
    def text(self) -> str:
        return self.prompt + self.response
