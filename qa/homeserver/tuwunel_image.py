"""The Tuwunel image a run uses unless --tuwunel-image names another.

One fact read from two places: the cheap registration (qa.homeserver.backends.tuwunel, for its default and help
text) and the backend itself (qa.homeserver.tuwunel). It lives apart so neither has to import the other.
"""

from __future__ import annotations

DEFAULT_IMAGE = "ghcr.io/matrix-construct/tuwunel:v1.5.1"
