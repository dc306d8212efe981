"""Moved to qa.kernel.e2ee; this re-export stays until the lead rewrites the imports (issue 24)."""
from qa.kernel.e2ee import *  # noqa: F403
