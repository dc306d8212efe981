"""Moved to qa.kernel.dotted; this re-export stays until the lead rewrites the imports (issue 24)."""
from qa.kernel.dotted import *  # noqa: F403
