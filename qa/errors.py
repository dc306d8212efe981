"""Moved to qa.kernel.errors; this re-export stays until the lead rewrites the imports (issue 24)."""
from qa.kernel.errors import *  # noqa: F403
