"""The assistant's sense of self: its name and maker (the `identity` config section), the system message that states
them, and `assistant.json` beside a model's weights, so every place that runs the model (chat, serve, evals) knows
who it was trained to be. Torch-free."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model.files import atomic_write_text

IDENTITY_FILE = "assistant.json"


class IdentityConfig(BaseModel):
    """Who the assistant is: stated by the identity conversations, by a system message in part of the training
    conversations, and by the same system message at inference (unless a conversation brings its own)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("Factory", min_length=1, description="The assistant's name.")
    maker: str = Field("the LLM Factory pipeline", min_length=1, description="Who made it.")
    system_message: str = Field("You are {name}, a small assistant model made by {maker}.",
                                description="The system message; {name} and {maker} are filled in.")
    at_inference: bool = Field(True, description="Add the system message to conversations that have none.")
    train_fraction: float = Field(0.3, ge=0, le=1, description="Share of training conversations that start with it.")

    def system_text(self) -> str:
        return self.system_message.format(name=self.name, maker=self.maker)


def save_identity(identity: IdentityConfig, model_dir: str | Path) -> None:
    atomic_write_text(Path(model_dir) / IDENTITY_FILE, identity.model_dump_json(indent=2) + "\n")


def load_identity(model_dir: str | Path) -> IdentityConfig | None:
    """The identity a model was trained with, or None for a model saved without one (an imported or older model)."""
    path = Path(model_dir) / IDENTITY_FILE
    if not path.is_file():
        return None
    return IdentityConfig.model_validate(json.loads(path.read_text()))


def with_system_message(messages: list[dict[str, Any]], identity: IdentityConfig | None) -> list[dict[str, Any]]:
    """`messages` with the identity's system message first, unless they bring their own, there is no identity, or it
    is not used at inference."""
    if identity is None or not identity.at_inference or (messages and messages[0].get("role") == "system"):
        return list(messages)
    return [{"role": "system", "content": identity.system_text()}, *messages]
