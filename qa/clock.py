"""Moved to qa.kernel.clock; this re-export stays until the lead rewrites the imports (issue 24)."""
from qa.kernel.clock import *  # noqa: F403
