"""The JSON the console's script sends (passkey ceremonies); forms are read as ``Form`` fields."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field


class PasskeyCreate(BaseModel):
    """A new passkey: the browser's ``credential.toJSON()`` and the name the person gave it."""

    credential: dict[str, Any]
    name: str = Field(default="", max_length=100)


class PasskeySignIn(BaseModel):
    """The answer to a sign-in challenge: its id, and the browser's ``credential.toJSON()``."""

    challenge_id: uuid.UUID
    credential: dict[str, Any]
