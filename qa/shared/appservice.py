"""Application-service bots (issue 33), the pure part: the registration's content, the namespace rules, the check of
a pushed transaction's token, and which scenario each pushed event belongs to.

One registration per homeserver, written before it boots (a homeserver reads `app_service_config_files` only
then): its exclusive user namespace is `@mqa_as-.*`, and the harness itself is the service URL. Each scenario's
bot gets a sub-namespace of its own (`mqa_as-<8 hex>-`), so bots of scenarios that run side by side on one
homeserver never see each other's events: the harness splits every pushed transaction by room and forwards each
part to the one scenario that owns the room (docs/bot-file.md, "Application-service bots").

Why `mqa_as-` and not `mqa-as-`: the harness's test users are `mqa-<role>-…`, and an actor named `as` would be
`mqa-as-…`, inside an exclusive namespace nobody else may register in. `mqa_as-` cannot be any test user's.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Every localpart of the registration's exclusive namespace starts with this; none of the harness's own does.
AS_PREFIX = "mqa_as-"
# The harness's own test users, admins and probes: mqa-<role>-… (qa.scenario.runner._localpart).
HARNESS_PREFIX = "mqa-"
REGISTRATION_ID = "matrix-qa"
SENDER_LOCALPART = AS_PREFIX + "sender"
TRANSACTION_PATH = "/_matrix/app/v1/transactions/{txn_id}"
_SCENARIO_TAG = re.compile(r"^[0-9a-f]{8}$")


def prefixes_overlap(a: str, b: str) -> bool:
    """Pure: whether some localpart could start with both prefixes (one is a prefix of the other)."""
    return a.startswith(b) or b.startswith(a)


def scenario_prefix(tag: str) -> str:
    """Pure: a scenario's own sub-namespace. Tags are 8 hex digits, so no scenario's prefix starts another's."""
    if not _SCENARIO_TAG.match(tag):
        raise ValueError(f"a scenario tag is 8 hex digits, got {tag!r}")
    return f"{AS_PREFIX}{tag}-"


def namespace_regex(prefix: str, server_name: str | None = None) -> str:
    """Pure: the user-namespace regex of every user id whose localpart starts with `prefix` (on `server_name`)."""
    server = re.escape(server_name) if server_name else ".*"
    return f"@{re.escape(prefix)}[^:]*:{server}"


def registration(*, url: str, as_token: str, hs_token: str, prefix: str = AS_PREFIX,
                 sender_localpart: str = SENDER_LOCALPART, server_name: str | None = None,
                 service_id: str = REGISTRATION_ID) -> dict[str, Any]:
    """Pure: an application service's registration (the spec's registration file), exclusive over `prefix`."""
    if not sender_localpart.startswith(prefix):
        raise ValueError(f"the sender {sender_localpart!r} must be inside the namespace {prefix!r}")
    return {
        "id": service_id,
        "url": url,
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": sender_localpart,
        "namespaces": {"users": [{"exclusive": True, "regex": namespace_regex(prefix, server_name)}],
                       "aliases": [], "rooms": []},
        "rate_limited": False,
    }


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """Pure: the token a request carries: `Authorization: Bearer X`, else the legacy `access_token` parameter."""
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer "):].strip()
    return query.get("access_token")


def token_matches(given: str | None, expected: str) -> bool:
    """Pure, constant-time: whether a pushed request carries the expected hs_token."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Route:
    """One scenario's share of the pushes: the users of its sub-namespace and the rooms it has been seen in."""

    prefix: str
    rooms: set[str] = field(default_factory=set)

    def owns_user(self, user_id: Any) -> bool:
        return isinstance(user_id, str) and user_id.startswith("@" + self.prefix)


class Routes:
    """Which scenario each pushed event goes to. A room belongs to the scenario whose namespace user an event in it
    concerns (an invite of the bot, its join, what it sends) or whose rooms it was given; once seen, it stays the
    scenario's. Events in rooms no scenario owns are not forwarded (counted in `dropped`)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.dropped = 0

    def add(self, key: str, prefix: str, rooms: Iterable[str] = ()) -> None:
        clash = next((k for k, r in self.routes.items() if prefixes_overlap(r.prefix, prefix)), None)
        if clash is not None:
            raise ValueError(f"the namespace {prefix!r} overlaps scenario {clash!r}'s")
        self.routes[key] = Route(prefix, set(rooms))

    def remove(self, key: str) -> None:
        self.routes.pop(key, None)

    def owner(self, event: Mapping[str, Any]) -> str | None:
        """The scenario an event goes to, learning its room when the event names a scenario's user."""
        room_id = event.get("room_id")
        for key, route in self.routes.items():
            if room_id in route.rooms:
                return key
        for key, route in self.routes.items():
            if route.owns_user(event.get("state_key")) or route.owns_user(event.get("sender")):
                if isinstance(room_id, str):
                    route.rooms.add(room_id)
                return key
        return None

    def split(self, events: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
        """Pure apart from learning rooms: the events by owning scenario, each in the order pushed."""
        parts: dict[str, list[Mapping[str, Any]]] = {}
        for event in events:
            key = self.owner(event)
            if key is None:
                self.dropped += 1
            else:
                parts.setdefault(key, []).append(event)
        return parts


def bot_registration(*, url: str, as_token: str, hs_token: str, prefix: str, localpart: str,
                     server_name: str) -> dict[str, Any]:
    """Pure: the copy a scenario's bot is handed (MATRIX_QA_APPSERVICE_REGISTRATION): its own URL and hs_token,
    the real as_token, and only its own sub-namespace, the one whose users are its."""
    return registration(url=url, as_token=as_token, hs_token=hs_token, prefix=prefix,
                        sender_localpart=localpart, server_name=server_name,
                        service_id=f"{REGISTRATION_ID}-{prefix.removeprefix(AS_PREFIX).rstrip('-')}")
