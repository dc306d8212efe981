"""A real Docker engine for the Tuwunel backend's tests, and a stand-in Tuwunel image built offline.

No image registry is reachable here, so Tuwunel itself cannot be pulled. The stand-in is `docker import` of a
tiny rootfs: a static busybox whose httpd answers the version endpoints the backend polls, started by a shell
that logs like a server (the registration token included, to prove the saved log is redacted) and stops on
SIGTERM. Other tags exit at once (the failure path) or never answer (readiness deadline, signals).
Registration and Matrix itself are NOT served.

`engine()` installs what is missing with apt (`docker.io`, `busybox-static`: the package registries are
reachable on our machines; bounded, and MATRIX_QA_NO_APT=1 turns it off), then takes its engine from
tests/images/engine.py: the one that answers, else a dockerd started outside our process tree, else Unavailable
with the reason, for a skip.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.images.engine import Unavailable, docker_engine

REPOSITORY = "matrix-qa-standin"
SERVING = f"{REPOSITORY}:tuwunel"
CRASHING = f"{REPOSITORY}:crash"
SLOW = f"{REPOSITORY}:slow"  # never answers in time: for the readiness deadline and signals mid-start
STANDIN_VERSION = "0.0-standin"
SOCKET = Path("/var/run/docker.sock")
APT_INSTALL_S = 600.0
APT_PACKAGES = {"dockerd": "docker.io", "busybox": "busybox-static"}


def install_missing(log_dir: Path) -> None:
    """apt-get install the engine and the static busybox when absent, so a fresh CI machine runs these tests
    instead of skipping them. Any failure is left to the checks below, which then give the skip reason."""
    missing = [pkg for tool, pkg in APT_PACKAGES.items() if shutil.which(tool) is None]
    if tool_busybox_is_dynamic():
        missing.append("busybox-static")
    if not missing or os.geteuid() != 0 or os.environ.get("MATRIX_QA_NO_APT") or shutil.which("apt-get") is None:
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with (log_dir / "apt.log").open("ab") as log:
        for argv in (["apt-get", "install", "-y", "--no-install-recommends", *sorted(set(missing))],
                     ["apt-get", "update"],
                     ["apt-get", "install", "-y", "--no-install-recommends", *sorted(set(missing))]):
            try:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=APT_INSTALL_S,
                                      check=False, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired):
                return
            if done.returncode == 0 and argv[1] == "install":
                return


def tool_busybox_is_dynamic() -> bool:
    found = shutil.which("busybox")
    return found is not None and b"ld-linux" in Path(found).resolve().read_bytes()[:4096]

INIT = """\
#!/bin/sh
echo "tuwunel stand-in starting: server_name=$TUWUNEL_SERVER_NAME port=$TUWUNEL_PORT"
echo "config: registration_token=$TUWUNEL_REGISTRATION_TOKEN"
busybox httpd -f -p "0.0.0.0:$TUWUNEL_PORT" -h /www &
child=$!
trap 'echo "tuwunel stand-in: SIGTERM, stopping"; kill $child; exit 0' TERM
wait $child
"""
CRASH = """\
#!/bin/sh
echo "tuwunel stand-in: database at $TUWUNEL_DATABASE_PATH is locked by another process"
echo "config: registration_token=$TUWUNEL_REGISTRATION_TOKEN"
exit 3
"""
VERSIONS = b'{"versions": ["v1.11"], "unstable_features": {}}\n'
FEDERATION = (json.dumps({"server": {"name": "Tuwunel", "version": STANDIN_VERSION}}) + "\n").encode()


def static_busybox() -> Path:
    found = shutil.which("busybox")
    if found is None:
        raise Unavailable("no busybox to build the stand-in image from (apt-get install busybox-static)")
    path = Path(found).resolve()
    # A dynamically linked busybox names its loader; inside an empty rootfs it could not start.
    if b"ld-linux" in path.read_bytes()[:4096]:
        raise Unavailable(f"{path} is dynamically linked; the stand-in image needs busybox-static")
    return path


def rootfs(init: str, busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "tmp", "var", "var/lib", "var/lib/tuwunel", "www", "www/_matrix", "www/_matrix/client",
                  "www/_matrix/federation", "www/_matrix/federation/v1"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        add("bin/busybox", busybox.read_bytes(), 0o755)
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        add("init", init.encode(), 0o755)
        add("www/_matrix/client/versions", VERSIONS)
        add("www/_matrix/federation/v1/version", FEDERATION)
    return buf.getvalue()


def build_images(client: Any) -> None:
    """Every tag, built once per engine (an import takes well under a second)."""
    from docker.errors import ImageNotFound

    busybox = static_busybox()
    slow = INIT.replace("\nbusybox httpd", "\nbusybox sleep 600\nbusybox httpd", 1)
    for tag, init in ((SERVING, INIT), (CRASHING, CRASH), (SLOW, slow)):
        with suppress(ImageNotFound):
            client.images.get(tag)
            continue
        repo, _, name = tag.partition(":")
        client.api.import_image_from_data(rootfs(init, busybox), repository=repo, tag=name,
                                          changes=['CMD ["/bin/sh", "/init"]'])


@contextmanager
def engine(log_dir: Path, hand_over_to: Path | None = None) -> Iterator[Any]:
    """A docker client of a working engine: tests/images/engine.py's (started outside our process tree if need
    be, and stopped or handed over to the xdist controller with `hand_over_to`), after installing what is
    missing with apt."""
    install_missing(log_dir)
    with docker_engine(log_dir, hand_over_to=hand_over_to) as started:
        yield started.client
