"""The canary scenario's id: the plan runs it first, the loader orders it first, a merged record lists it first."""

from __future__ import annotations

CANARY = "canary"
