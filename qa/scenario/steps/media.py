"""Steps in which a test user sends a file: send_media (an image, audio, video or any file, encrypted in an
encrypted room). What the model then received is checked by expect_model_request (model_requests.py)."""

from __future__ import annotations

import mimetypes
import os
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from qa.kernel.clock import mono_ms
from qa.kernel.errors import ConfigError
from qa.scenario.context import Ref
from qa.scenario.fields import ActorName, MarkedText, RoomName, StepId, error
from qa.scenario.steps.base import MESSAGES, SENT, ActorUse, InRoom, StepRef, mention_use, opt_ref
from qa.scenario.steps.common import mention_of, text

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext

MediaKind = Literal["image", "audio", "video", "file"]
_FIXTURE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_MSGTYPES = {"image": "m.image", "audio": "m.audio", "video": "m.video", "file": "m.file"}


class SendMedia(InRoom):
    """An actor uploads a file to the homeserver's content repository and sends it as m.image / m.audio /
    m.video / m.file (encrypted, attachment included, in an encrypted room). The file is `fixture` (a name under
    fixtures/media/) or `generate_bytes` random bytes; `caption` is the message body (Matrix 1.10 captions)."""

    kind: ClassVar[str] = "send_media"
    does: ClassVar[str] = (
        "`as` uploads a file and sends it as `media: image\\|audio\\|video\\|file`: `fixture` (a file in "
        "`fixtures/media/`) or `generate_bytes`, optional `filename`, `mimetype`, `caption`, `mention` (in the "
        "caption), `thread`, `id`; encrypted, attachment included, in an encrypted room")
    defines_kind: ClassVar[str | None] = SENT
    capabilities: ClassVar[tuple[str, ...]] = ("media",)

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    media: MediaKind
    fixture: Annotated[str, Field(pattern=_FIXTURE_NAME, max_length=100)] | None = None
    generate_bytes: int | None = Field(default=None, gt=0, le=20_000_000)
    mimetype: Annotated[str, Field(pattern=r"^[a-z]+/[A-Za-z0-9.+-]+$")] | None = None  # None: from the name
    filename: Annotated[str, Field(pattern=_FIXTURE_NAME, max_length=100)] | None = None
    caption: MarkedText | None = None
    mention: ActorName | None = None  # the caption mentions them (m.mentions + pill); needs a caption
    thread: StepId | None = None
    id: StepId | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SendMedia:
        if (self.fixture is None) == (self.generate_bytes is None):
            raise error("conflict", "send_media needs exactly one of `fixture` (a file in fixtures/media/) "
                                    "or `generate_bytes`")
        if self.mention is not None and self.caption is None:
            raise error("conflict", "a mention lives in the caption: give `caption` too")
        return self

    def refs(self) -> list[StepRef]:
        return opt_ref("thread", self.thread, MESSAGES)

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), *mention_use(("mention",), self.mention)]

    def media_fixtures(self) -> list[tuple[tuple[str, ...], str]]:
        return [] if self.fixture is None else [(("fixture",), self.fixture)]

    def file(self, ctx: ScenarioContext) -> tuple[bytes, str, str]:
        """(data, filename, mimetype): the fixture file, or fresh random bytes."""
        from qa.library import confined, media_fixture

        if self.fixture is not None:
            # Checked at load; again here, so a link swapped in since is refused rather than read.
            path, why = confined(media_fixture(ctx.scenario.source_path, ""), self.fixture)
            if path is None:
                raise ConfigError(f"send_media fixture {self.fixture!r}: {why}")
            data = path.read_bytes()
            name = self.filename or self.fixture
        else:
            data = os.urandom(self.generate_bytes or 0)
            name = self.filename or f"generated-{self.generate_bytes}.bin"
        mimetype = self.mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return data, name, mimetype

    async def run(self, ctx: ScenarioContext) -> str:
        from qa.actors import media_content

        actor, room_id = ctx.actors[self.actor], ctx.rooms[self.room]
        thread_root = ctx.refs[self.thread].event_id if self.thread else None
        data, filename, mimetype = self.file(ctx)
        encrypt = bool(ctx.scenario.rooms[self.room].encrypted)
        mxc, keys = await actor.upload(data, mimetype, filename, encrypt=encrypt)
        caption = text(ctx, self.caption) if self.caption is not None else None
        content = media_content(_MSGTYPES[self.media], mxc, filename=filename, mimetype=mimetype, size=len(data),
                                caption=caption, encrypted_keys=keys, mention=mention_of(ctx, self.mention),
                                thread_root=thread_root)
        sent_at = mono_ms()
        event_id = await actor.send(room_id, content)
        if self.id:
            ctx.refs[self.id] = Ref(room_id, event_id, thread_root, sent_at, actor=self.actor, body=content["body"],
                                    text=caption)
        how = "encrypted " if encrypt else ""
        return f"{self.actor} sent {how}{content['msgtype']} {filename} ({mimetype}, {len(data)} bytes) as {event_id}"
