"""Build the Complement-style Synapse image offline, and find it again: Debian rootfs + the host's Synapse + entrypoint.

    python -m tests.images.build [--rebuild] [--fresh-rootfs] [--no-variants] [--synapse-from auto|host|pip]
                                 [--cache-dir DIR] [--prune]

No image registry is reachable here, so nothing is pulled. Three steps, each from what this machine has or its
package registries serve, each result found again next time:

1. a Debian root filesystem with Debian's Python (`mmdebstrap --variant=extract`, from Debian's packages): a
   tarball cached on disk ($MATRIX_QA_IMAGE_CACHE, else ~/.cache/matrix-qa/images), keyed by the recipe;
2. Synapse and its dependencies under /opt/synapse: the distributions the host's `matrix-synapse` needs,
   copied from the host's site-packages (same Python minor as the image's, so the same wheels and .pyc files
   fit), or installed by pip with the same pins when the host cannot serve them. The rootfs and this layer are
   one `docker import` (`matrix-qa/synapse:<version>-<pins hash>`), labelled with the pins' hash, so a change
   of the entrypoint or the settings reuses it;
3. the entrypoint (tests/images/entrypoint.py) and the test-homeserver settings rendered from
   qa.homeserver.synapse (design.md's Synapse settings: one source for the embedded server and the image),
   put into a created container and committed with the entrypoint, the exposed ports and the labels.

Every image carries `org.matrix-qa.synapse-version` and `org.matrix-qa.inputs` (a hash of every build input);
a build first looks for an image with the same inputs and reuses it. The variants that break the contract on
purpose (`exit`, `no-versions`, `closed-registration`) are one more commit each, with MATRIX_QA_IMAGE_FAULT
set: no new files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.images.entrypoint import BASE_CONFIG_PATH, CLIENT_PORT, DATA_DIR, SELF_PATH
from tests.images.recipe import (
    CONTRACT,
    FAULT_VARIANTS,
    GROUP,
    IMAGE_NAME,
    LABEL_IMAGE,
    LABEL_INPUTS,
    LABEL_PINS,
    LABEL_ROOTFS,
    PASSWD,
    SYNAPSE_DIR,
    SYNAPSE_NAME,
    SYNAPSE_SOURCES,
    RootfsRecipe,
    base_config,
    cache_dir,
    commit_changes,
    fault_changes,
    image_labels,
    image_tag,
    inputs_digest,
    label_lines,
    pins,
    pip_argv,
    removal_rank,
    requirement_closure,
    rootfs_name,
    synapse_digest,
    synapse_labels,
    synapse_source,
    synapse_tag,
)

HERE = Path(__file__).resolve().parent
ENTRYPOINT = HERE / "entrypoint.py"
MMDEBSTRAP_TIMEOUT_S = 300

Log = Callable[[str], None]


class BuildError(Exception):
    """The image could not be built; the message says what failed and where its log is."""


class ToolMissing(BuildError):
    """A tool the build needs is not installed (a reason to skip, not a failure)."""


@dataclass
class Built:
    """The images of one set of build inputs, by variant, and what finding or building them cost."""

    synapse_version: str
    inputs: str
    pins: str  # the Synapse layer's digest
    tags: dict[str, str]
    built: bool
    seconds: float
    steps: list[str] = field(default_factory=list)

    @property
    def image(self) -> str:
        return self.tags[CONTRACT]


# --- inputs from this machine ----------------------------------------------------------------------------------


def current_inputs(recipe: RootfsRecipe) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(Synapse's version, its closure, the image's settings) from what is installed here."""
    from qa.homeserver.synapse_config import build_synapse_config

    try:
        closure = requirement_closure("matrix-synapse")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ToolMissing(f"matrix-synapse is not installed on this host ({exc})") from None
    config = base_config(build_synapse_config(workdir=DATA_DIR, port=CLIENT_PORT))
    return closure["matrix-synapse"], closure, config


def sources() -> dict[str, bytes]:
    """The files whose every change makes a new image: what runs in it, and what puts it together."""
    return {name: (HERE / name).read_bytes() for name in ("entrypoint.py", "recipe.py", "build.py")}


def _editable(names: Iterable[str]) -> bool:
    for name in names:
        direct = importlib.metadata.distribution(name).read_text("direct_url.json")
        if direct and json.loads(direct).get("dir_info", {}).get("editable"):
            return True
    return False


# --- I/O: the rootfs, the Synapse layer, the engine ------------------------------------------------------------


def ensure_rootfs(recipe: RootfsRecipe, cache: Path, log: Log) -> Path:
    """The recipe's rootfs tarball: from the cache, else made by mmdebstrap (written aside, then renamed)."""
    out = cache / rootfs_name(recipe)
    if out.exists():
        log(f"rootfs: cached {out}")
        return out
    if shutil.which("mmdebstrap") is None:
        raise ToolMissing("mmdebstrap is not installed (apt-get install mmdebstrap), and no cached rootfs at "
                          f"{out}")
    cache.mkdir(parents=True, exist_ok=True)
    partial, log_path = out.with_suffix(".partial"), out.with_suffix(".log")
    t0 = time.monotonic()
    with log_path.open("wb") as sink:
        try:
            done = subprocess.run(recipe.argv(partial), stdout=sink, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=MMDEBSTRAP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            partial.unlink(missing_ok=True)
            raise BuildError(f"mmdebstrap took over {MMDEBSTRAP_TIMEOUT_S}s; its log: {log_path}") from None
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"mmdebstrap exited with {done.returncode}; its log: {log_path}\n{_tail(log_path)}")
    _check_python(partial, recipe)
    os.replace(partial, out)
    log(f"rootfs: mmdebstrap {recipe.suite} in {time.monotonic() - t0:.1f}s -> {out}")
    return out


def _check_python(rootfs: Path, recipe: RootfsRecipe) -> None:
    """The host's Synapse is copied for this Python: a suite with another one would fail only at run time."""
    wanted = f"./usr/bin/python{recipe.python}"
    with tarfile.open(rootfs) as tar:
        if not any(member.name == wanted for member in tar):
            rootfs.unlink()
            raise BuildError(f"the {recipe.suite} rootfs has no {wanted[1:]}: RootfsRecipe.python is wrong")


def write_synapse_layer(recipe: RootfsRecipe, closure: Mapping[str, str], out: Path, log: Log,
                        wanted: str = "auto") -> None:
    """The tar of /opt/synapse: Synapse and every distribution it needs."""
    t0 = time.monotonic()
    host_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        source = synapse_source(wanted, host_python, recipe, _editable(closure))
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    with tarfile.open(out, "w") as tar:
        if source == "host":
            count = _add_host_distributions(tar, closure)
            how = f"copied {count} files of {len(closure)} distributions from the host"
        else:
            _add_pip_install(tar, recipe, pins(closure))
            how = f"pip installed {len(closure)} pinned distributions for Python {recipe.python}"
    log(f"synapse layer: {how} in {time.monotonic() - t0:.1f}s")


def write_entry_layer(config: Mapping[str, Any], out: Path) -> None:
    """The small tar on top: the entrypoint, the settings, the accounts files and the empty /data."""
    with tarfile.open(out, "w") as tar:
        _add_bytes(tar, str(SELF_PATH).lstrip("/"), ENTRYPOINT.read_bytes(), 0o755)
        _add_bytes(tar, str(BASE_CONFIG_PATH).lstrip("/"), json.dumps(config, indent=1, sort_keys=True).encode())
        _add_bytes(tar, "etc/passwd", PASSWD.encode())
        _add_bytes(tar, "etc/group", GROUP.encode())
        data = tarfile.TarInfo(str(DATA_DIR).lstrip("/"))
        data.type, data.mode, data.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
        tar.addfile(data)


def _add_host_distributions(tar: tarfile.TarFile, closure: Mapping[str, str]) -> int:
    count = 0
    for name in sorted(closure):
        dist = importlib.metadata.distribution(name)
        root = Path(dist.locate_file("")).resolve()
        for entry in dist.files or []:
            path = Path(dist.locate_file(entry)).resolve()
            # Console scripts live outside site-packages (../../bin) with the host's shebang: not wanted.
            if not path.is_relative_to(root) or not path.is_file():
                continue
            tar.add(path, arcname=f"{SYNAPSE_DIR}/{path.relative_to(root)}", recursive=False)
            count += 1
    return count


def _add_pip_install(tar: tarfile.TarFile, recipe: RootfsRecipe, pinned: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="matrix-qa-pip-") as scratch:
        target = Path(scratch) / "synapse"
        done = subprocess.run(pip_argv(recipe, target, pinned), capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, timeout=MMDEBSTRAP_TIMEOUT_S)
        if done.returncode != 0:
            raise BuildError(f"pip could not install Synapse for the image: {done.stderr[-2000:]}")
        tar.add(target, arcname=SYNAPSE_DIR)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def find_image(client: Any, labels: Mapping[str, str]) -> Any | None:
    found = client.images.list(filters={"label": [f"{k}={v}" for k, v in labels.items()]})
    return found[0] if found else None


def commit_over(client: Any, image: str, tag: str, changes: list[str], layer: Path | None = None) -> None:
    """A new image: `image`, plus the files of `layer` if given, committed with `changes` (never started).

    The container needs a command to be created; `CMD []` takes it out of the image again."""
    container = client.containers.create(image, command=["/bin/true"], labels={LABEL_IMAGE: "build"})
    try:
        if layer is not None:
            with layer.open("rb") as stream:
                container.put_archive("/", stream)
        repository, _, name = tag.rpartition(":")
        container.commit(repository=repository, tag=name, changes=[*changes, "CMD []"])
    finally:
        container.remove(force=True, v=True)  # v: an image declaring a VOLUME would leave one behind


def ensure_image(client: Any, *, recipe: RootfsRecipe | None = None, cache: Path | None = None,
                 rebuild: bool = False, variants: Iterable[str] = FAULT_VARIANTS, synapse_from: str = "auto",
                 log: Log = print) -> Built:
    """The image for the current inputs (and its fault variants): found by label, built when missing.

    `rebuild` makes the Synapse image and every image on it again (the rootfs tarball stays)."""
    t0 = time.monotonic()
    recipe = recipe or RootfsRecipe()
    cache = cache or cache_dir()
    version, closure, config = current_inputs(recipe)
    inputs = inputs_digest(recipe, pins(closure), config, sources())
    tags = {variant: image_tag(version, inputs, variant) for variant in (CONTRACT, *variants)}
    lines: list[str] = []

    def note(line: str) -> None:
        lines.append(line)
        log(line)

    layer = synapse_digest(recipe, pins(closure))
    if rebuild:  # the old images would keep their labels, untagged, and be found again
        remove_images(client, client.images.list(filters={"label": f"{LABEL_PINS}={layer}"}))
    built = not _found(client, tags[CONTRACT], image_labels(version, inputs))
    if built:
        def synapse_layer(out: Path) -> None:
            write_synapse_layer(recipe, closure, out, note, synapse_from)

        below = ensure_synapse_image(client, recipe, cache, synapse_layer, (version, layer), note)
        _commit_entry(client, below, config, cache, tags[CONTRACT], image_labels(version, inputs), note)
    for variant in variants:
        labels = image_labels(version, inputs, variant)
        # A variant sits on the contract image: a new contract image means new variants.
        if built or not _found(client, tags[variant], labels):
            commit_over(client, tags[CONTRACT], tags[variant], fault_changes(labels, variant))
            note(f"variant {variant}: {tags[variant]}")
    seconds = time.monotonic() - t0
    note(f"{'built' if built else 'cached'}: {tags[CONTRACT]} in {seconds:.1f}s")
    return Built(version, inputs, layer, tags, built, seconds, lines)


def _found(client: Any, tag: str, labels: Mapping[str, str]) -> bool:
    """Whether an image with these labels exists; it is (re)tagged `tag` if it lost the tag."""
    image = find_image(client, labels)
    if image is not None and tag not in image.tags:
        image.tag(*tag.rsplit(":", 1))
    return image is not None


def ensure_synapse_image(client: Any, recipe: RootfsRecipe, cache: Path, make_layer: Callable[[Path], None],
                         name: tuple[str, str], log: Log) -> Any:
    """The rootfs plus /opt/synapse, found by the pins' label or imported: every entrypoint version shares it.

    One `docker import` of the rootfs tarball with the layer's tar appended: the engine unpacks the files once,
    where importing the rootfs and then putting and committing the layer on it unpacked and packed the larger
    part twice (on a loaded 2-core machine that was 40 s of the build)."""
    version, digest = name
    labels, tag = synapse_labels(version, digest, recipe), synapse_tag(version, digest)
    if _found(client, tag, labels):
        log(f"synapse image: cached {tag}")
        return client.images.get(tag)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="layer-", dir=cache) as scratch:
        layer = Path(scratch) / "synapse-layer.tar"
        # The rootfs (mmdebstrap: downloads, unpacking) and the layer (file copies) overlap well on two cores.
        with ThreadPoolExecutor(max_workers=2) as pool:
            rootfs = pool.submit(ensure_rootfs, recipe, cache, log)
            pool.submit(make_layer, layer).result()
            rootfs_path = rootfs.result()
        t0 = time.monotonic()
        repository, _, name_tag = tag.rpartition(":")
        client.api.import_image_from_data(concatenated_tar(rootfs_path, layer), repository=repository,
                                          tag=name_tag, changes=label_lines(labels))
    log(f"synapse image: rootfs and layer imported in {time.monotonic() - t0:.1f}s -> {tag}")
    return client.images.get(tag)


def concatenated_tar(first: Path, second: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    """One tar stream: `first` without its end-of-archive blocks, then all of `second` (as `tar -A` joins)."""
    with tarfile.open(first) as tar:
        for _ in tar:
            pass
        end = tar.offset  # where the last member's data ends and the closing zero blocks begin
    with first.open("rb") as stream:
        while end > 0 and (data := stream.read(min(chunk, end))):
            end -= len(data)
            yield data
    with second.open("rb") as stream:
        while data := stream.read(chunk):
            yield data


def _commit_entry(client: Any, below: Any, config: Mapping[str, Any], cache: Path, tag: str,
                  labels: Mapping[str, str], log: Log) -> None:
    t0 = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="entry-", dir=cache) as scratch:
        layer = Path(scratch) / "entry-layer.tar"
        write_entry_layer(config, layer)
        commit_over(client, below.id, tag, commit_changes(labels), layer)
    log(f"image: entrypoint committed in {time.monotonic() - t0:.1f}s -> {tag}")


def prune(client: Any, built: Built, log: Log = print) -> int:
    """Remove this script's images of other inputs (another Synapse, entrypoint or recipe), and those of kinds it
    no longer makes. Returns how many."""
    def stale(image: Any) -> bool:
        kind = image.labels.get(LABEL_IMAGE)
        if kind == IMAGE_NAME:
            return image.labels.get(LABEL_INPUTS) != built.inputs
        if kind == SYNAPSE_NAME:
            return image.labels.get(LABEL_PINS) != built.pins
        return True  # a kind this script no longer makes

    found = [image for image in client.images.list(filters={"label": LABEL_IMAGE}) if stale(image)]
    remove_images(client, found)
    for image in found:
        log(f"pruned {', '.join(image.tags) or image.short_id}")
    return len(found)


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.images.build", description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true",
                        help="make the Synapse layer and the images on it again, even though they exist")
    parser.add_argument("--no-variants", action="store_true", help="skip the images that break the contract")
    parser.add_argument("--cache-dir", type=Path, help="where the rootfs tarball is kept")
    parser.add_argument("--fresh-rootfs", action="store_true",
                        help="make the rootfs anew with mmdebstrap (drops its tarball and every image on it first)")
    parser.add_argument("--prune", action="store_true", help="then remove images of other build inputs")
    parser.add_argument("--synapse-from", choices=SYNAPSE_SOURCES, default="auto",
                        help="copy the host's installed Synapse, or install the same pins with pip (auto: host "
                             "when it can)")
    args = parser.parse_args(argv)
    from tests.images.engine import Unavailable, docker_engine

    cache = args.cache_dir or cache_dir()
    try:
        with docker_engine(cache / "engine") as engine:
            if args.fresh_rootfs:
                drop_rootfs(engine.client, RootfsRecipe(), cache)
            built = ensure_image(engine.client, cache=cache, rebuild=args.rebuild or args.fresh_rootfs,
                                 variants=() if args.no_variants else FAULT_VARIANTS,
                                 synapse_from=args.synapse_from)
            if args.prune:
                prune(engine.client, built)
    except (Unavailable, BuildError) as exc:
        print(f"cannot build the image: {exc}", file=sys.stderr)
        return 2
    for variant, tag in built.tags.items():
        print(f"{variant}: {tag}")
    return 0


def drop_rootfs(client: Any, recipe: RootfsRecipe, cache: Path) -> None:
    """Forget the cached rootfs tarball and every image made from it (they all carry its label): the next build
    runs mmdebstrap again."""
    (cache / rootfs_name(recipe)).unlink(missing_ok=True)
    remove_images(client, client.images.list(filters={"label": f"{LABEL_ROOTFS}={recipe.digest()}"}))


def remove_images(client: Any, images: list[Any]) -> None:
    for image in sorted(images, key=lambda image: removal_rank(image.labels)):
        client.images.remove(image.id, force=True)


if __name__ == "__main__":
    sys.exit(main())
