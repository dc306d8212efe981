"""Build the Complement-style Synapse image offline, and find it again: Debian rootfs + the host's Synapse + entrypoint.

    python -m tests.images.build [--rebuild] [--no-variants] [--cache-dir DIR] [--prune]

No image registry is reachable here, so nothing is pulled. The image is three layers, each from what this
machine has or its package registries serve:

1. a Debian root filesystem with Debian's Python (`mmdebstrap --variant=extract`, from Debian's packages),
   `docker import`ed as the base image. The tarball is cached on disk ($MATRIX_QA_IMAGE_CACHE, else
   ~/.cache/matrix-qa/images), and the base image in the engine, both keyed by the recipe;
2. Synapse and its dependencies under /opt/synapse: the distributions the host's `matrix-synapse` needs,
   copied from the host's site-packages (same Python minor as the image's, so the same wheels and .pyc
   files fit), or installed by pip with the same pins when the host cannot serve them;
3. the entrypoint (tests/images/entrypoint.py) and the test-homeserver settings rendered from
   qa.homeserver.synapse (design.md's Synapse settings: one source for the embedded server and the image).

Layers 2 and 3 go in with `put_archive` into a created container, then `commit` sets the entrypoint, the
exposed ports and the labels. Every image carries `org.matrix-qa.synapse-version` and
`org.matrix-qa.inputs` (a hash of every build input); a build first looks for an image with the same inputs
and reuses it. The variants that break the contract on purpose (`exit`, `no-versions`,
`closed-registration`) are one more commit each, with MATRIX_QA_IMAGE_FAULT set: no new files.
"""

from __future__ import annotations

import argparse
import hashlib
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
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
ENTRYPOINT = HERE / "entrypoint.py"
IMAGE_REPO = "matrix-qa/complement-synapse"
BASE_REPO = "matrix-qa/debian-python"
LABEL_IMAGE = "org.matrix-qa.image"
LABEL_SYNAPSE = "org.matrix-qa.synapse-version"
LABEL_INPUTS = "org.matrix-qa.inputs"
LABEL_VARIANT = "org.matrix-qa.variant"
LABEL_ROOTFS = "org.matrix-qa.rootfs"
IMAGE_NAME = "complement-synapse"
CONTRACT = "contract"  # the variant that meets the contract; the others are the faults of the entrypoint
FAULT_VARIANTS = ("exit", "no-versions", "closed-registration")
SYNAPSE_DIR = "opt/synapse"
MMDEBSTRAP_TIMEOUT_S = 300
# Keys of qa's test config that belong to one container, not to the image: the entrypoint sets them.
# federation_domain_whitelist goes too: the image serves federation on 8448, as the contract asks.
PER_CONTAINER_KEYS = ("server_name", "public_baseurl", "listeners", "pid_file", "database", "log_config",
                      "media_store_path", "signing_key_path", "registration_shared_secret", "macaroon_secret_key",
                      "form_secret", "enable_registration", "federation_domain_whitelist")

# What base-passwd's maintainer scripts would have written (the extract variant runs none).
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"

Log = Callable[[str], None]


class BuildError(Exception):
    """The image could not be built; the message says what failed and where its log is."""


class ToolMissing(BuildError):
    """A tool the build needs is not installed (a reason to skip, not a failure)."""


@dataclass(frozen=True)
class RootfsRecipe:
    """What `mmdebstrap` is asked for. The suite's Python must be the host's minor to copy the host's Synapse.

    `extract` unpacks python3 and its dependencies without running any maintainer script: 13 s here where
    `minbase` (dpkg configuring a whole base system) took 23 to 66 s. Python runs without those scripts; the
    two files they would have made that anything here reads, /etc/passwd and /etc/group, come with the layer."""

    suite: str = "bookworm"
    python: str = "3.11"
    variant: str = "extract"
    packages: tuple[str, ...] = ("python3",)
    # Documentation is dead weight in a test image: a smaller tarball imports faster.
    excludes: tuple[str, ...] = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
    mirror: str = ""

    def argv(self, out: Path) -> list[str]:
        argv = ["mmdebstrap", f"--variant={self.variant}", "--format=tar", f"--include={','.join(self.packages)}"]
        argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in self.excludes]
        argv += [self.suite, str(out)]
        return [*argv, self.mirror] if self.mirror else argv

    def digest(self) -> str:
        return _sha256(json.dumps([self.suite, self.python, self.variant, self.packages, self.excludes,
                                   self.mirror]))


@dataclass
class Built:
    """The images of one set of build inputs, by variant, and what finding or building them cost."""

    synapse_version: str
    inputs: str
    tags: dict[str, str]
    built: bool
    seconds: float
    steps: list[str] = field(default_factory=list)

    @property
    def image(self) -> str:
        return self.tags[CONTRACT]


# --- pure: what goes in, and how it is named --------------------------------------------------------------------


def requirement_closure(root: str, distribution: Callable[[str], Any] = importlib.metadata.distribution,
                        ) -> dict[str, str]:
    """{canonical name: version} of `root` and every installed distribution it needs, extras followed."""
    seen: dict[str, tuple[str, frozenset[str]]] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        dist = distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        known = seen.get(key)
        if known is not None and extras <= known[1]:
            continue
        extras |= known[1] if known else frozenset()
        seen[key] = (dist.version, extras)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in sorted(extras) or [""]):
                todo.append((req.name, frozenset(req.extras)))
    return {key: version for key, (version, _) in seen.items()}


def pins(closure: Mapping[str, str]) -> list[str]:
    return [f"{name}=={version}" for name, version in sorted(closure.items())]


def base_config(full: Mapping[str, Any]) -> dict[str, Any]:
    """The image's fixed settings: qa's test-homeserver config without what each container sets itself."""
    return {key: value for key, value in full.items() if key not in PER_CONTAINER_KEYS}


def inputs_digest(recipe: RootfsRecipe, pinned: Iterable[str], config: Mapping[str, Any],
                  sources: Mapping[str, bytes]) -> str:
    """One hash over every build input: the rootfs recipe, the pinned distributions, the settings, and the
    source of the entrypoint and of this script (a change in how the image is put together rebuilds it)."""
    parts = {
        "rootfs": recipe.digest(),
        "pins": sorted(pinned),
        "config": config,
        "sources": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(sources.items())},
    }
    return _sha256(json.dumps(parts, sort_keys=True))


def image_tag(synapse_version: str, inputs: str, variant: str = CONTRACT) -> str:
    suffix = "" if variant == CONTRACT else f"-{variant}"
    return f"{IMAGE_REPO}:{synapse_version}-{inputs[:12]}{suffix}"


def image_labels(synapse_version: str, inputs: str, variant: str = CONTRACT) -> dict[str, str]:
    return {LABEL_IMAGE: IMAGE_NAME, LABEL_SYNAPSE: synapse_version, LABEL_INPUTS: inputs, LABEL_VARIANT: variant}


def commit_changes(labels: Mapping[str, str], env: Mapping[str, str] | None = None) -> list[str]:
    """Dockerfile lines `docker commit` applies: the contract's ports, the entrypoint, the labels."""
    lines = ['ENTRYPOINT ["python3", "/opt/matrix-qa/entrypoint.py"]',
             f"ENV PYTHONPATH=/{SYNAPSE_DIR}", "ENV PYTHONUNBUFFERED=1", "EXPOSE 8008/tcp", "EXPOSE 8448/tcp",
             "WORKDIR /data"]
    lines += [f"ENV {key}={value}" for key, value in sorted((env or {}).items())]
    return lines + [f"LABEL {key}={json.dumps(value)}" for key, value in sorted(labels.items())]


def fault_changes(labels: Mapping[str, str], fault: str) -> list[str]:
    from tests.images.entrypoint import FAULT_ENV

    return [f"ENV {FAULT_ENV}={fault}", f"LABEL {LABEL_VARIANT}={json.dumps(fault)}",
            *(f"LABEL {k}={json.dumps(v)}" for k, v in sorted(labels.items()) if k != LABEL_VARIANT)]


def host_can_serve(host_python: str, recipe: RootfsRecipe, editable: bool) -> bool:
    """Whether the host's installed Synapse can be copied as it is: same Python minor, nothing editable."""
    return host_python == recipe.python and not editable


def pip_argv(recipe: RootfsRecipe, target: Path, pinned: Iterable[str]) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", recipe.python,
            "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
            "--platform", "linux_x86_64", *pinned]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- inputs from this machine ----------------------------------------------------------------------------------


def cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("MATRIX_QA_IMAGE_CACHE"):
        return Path(env["MATRIX_QA_IMAGE_CACHE"])
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matrix-qa" / "images"


def current_inputs(recipe: RootfsRecipe) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(Synapse's version, its closure, the image's settings) from what is installed here."""
    from qa.homeserver.synapse import build_synapse_config

    try:
        closure = requirement_closure("matrix-synapse")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ToolMissing(f"matrix-synapse is not installed on this host ({exc})") from None
    config = base_config(build_synapse_config(workdir=Path("/data"), port=8008))
    return closure["matrix-synapse"], closure, config


def sources() -> dict[str, bytes]:
    return {"entrypoint.py": ENTRYPOINT.read_bytes(), "build.py": Path(__file__).read_bytes()}


def _editable(names: Iterable[str]) -> bool:
    for name in names:
        direct = importlib.metadata.distribution(name).read_text("direct_url.json")
        if direct and json.loads(direct).get("dir_info", {}).get("editable"):
            return True
    return False


# --- I/O: the rootfs, the Synapse layer, the engine ------------------------------------------------------------


def ensure_rootfs(recipe: RootfsRecipe, cache: Path, log: Log) -> Path:
    """The recipe's rootfs tarball: from the cache, else made by mmdebstrap (written aside, then renamed)."""
    out = cache / f"rootfs-{recipe.suite}-{recipe.digest()[:12]}.tar"
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


def write_layer(recipe: RootfsRecipe, closure: Mapping[str, str], config: Mapping[str, Any], out: Path,
                log: Log) -> None:
    """The tar put over the rootfs: /opt/synapse, /opt/matrix-qa (entrypoint, settings), /data."""
    t0 = time.monotonic()
    host_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    with tarfile.open(out, "w") as tar:
        if host_can_serve(host_python, recipe, _editable(closure)):
            count = _add_host_distributions(tar, closure)
            how = f"copied {count} files of {len(closure)} distributions from the host"
        else:
            _add_pip_install(tar, recipe, pins(closure))
            how = f"pip installed {len(closure)} pinned distributions for Python {recipe.python}"
        _add_bytes(tar, "opt/matrix-qa/entrypoint.py", ENTRYPOINT.read_bytes(), 0o755)
        _add_bytes(tar, "opt/matrix-qa/base-config.json", json.dumps(config, indent=1, sort_keys=True).encode())
        _add_bytes(tar, "etc/passwd", PASSWD.encode())
        _add_bytes(tar, "etc/group", GROUP.encode())
        data = tarfile.TarInfo("data")
        data.type, data.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(data)
    log(f"synapse layer: {how} in {time.monotonic() - t0:.1f}s")


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


def ensure_base_image(client: Any, recipe: RootfsRecipe, cache: Path, log: Log) -> Any:
    labels = {LABEL_IMAGE: "debian-python", LABEL_ROOTFS: recipe.digest()}
    if (image := find_image(client, labels)) is not None:
        log(f"base image: cached {image.short_id}")
        return image
    rootfs = ensure_rootfs(recipe, cache, log)
    t0 = time.monotonic()
    tag = f"{recipe.suite}-{recipe.digest()[:12]}"
    changes = [f"LABEL {k}={json.dumps(v)}" for k, v in sorted(labels.items())]
    client.api.import_image_from_file(str(rootfs), repository=BASE_REPO, tag=tag, changes=changes)
    log(f"base image: docker import in {time.monotonic() - t0:.1f}s -> {BASE_REPO}:{tag}")
    return client.images.get(f"{BASE_REPO}:{tag}")


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
        container.remove(force=True)


def ensure_image(client: Any, *, recipe: RootfsRecipe | None = None, cache: Path | None = None,
                 rebuild: bool = False, variants: Iterable[str] = FAULT_VARIANTS, log: Log = print) -> Built:
    """The image for the current inputs (and its fault variants): found by label, built when missing."""
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

    if rebuild:  # the old images would keep their labels, untagged, and be found again
        remove_images(client, client.images.list(filters={"label": f"{LABEL_INPUTS}={inputs}"}))
    built = rebuild or not _found(client, tags[CONTRACT], image_labels(version, inputs))
    if built:
        _build_contract(client, recipe, cache, closure, config, tags[CONTRACT], image_labels(version, inputs), note)
    for variant in variants:
        labels = image_labels(version, inputs, variant)
        # A variant sits on the contract image: a new contract image means new variants.
        if built or not _found(client, tags[variant], labels):
            commit_over(client, tags[CONTRACT], tags[variant], fault_changes(labels, variant))
            note(f"variant {variant}: {tags[variant]}")
    seconds = time.monotonic() - t0
    note(f"{'built' if built else 'cached'}: {tags[CONTRACT]} in {seconds:.1f}s")
    return Built(version, inputs, tags, built, seconds, lines)


def _found(client: Any, tag: str, labels: Mapping[str, str]) -> bool:
    """Whether an image with these labels exists; it is (re)tagged `tag` if it lost the tag."""
    image = find_image(client, labels)
    if image is not None and tag not in image.tags:
        image.tag(*tag.rsplit(":", 1))
    return image is not None


def _build_contract(client: Any, recipe: RootfsRecipe, cache: Path, closure: Mapping[str, str],
                    config: Mapping[str, Any], tag: str, labels: Mapping[str, str], log: Log) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="layer-", dir=cache) as scratch:
        layer = Path(scratch) / "synapse-layer.tar"
        # The rootfs (mmdebstrap: downloads and dpkg) and the layer (file copies) overlap well on two cores.
        with ThreadPoolExecutor(max_workers=2) as pool:
            base = pool.submit(ensure_base_image, client, recipe, cache, log)
            pool.submit(write_layer, recipe, closure, config, layer, log).result()
            base_image = base.result()
        t0 = time.monotonic()
        commit_over(client, base_image.id, tag, commit_changes(labels), layer)
        log(f"image: layer put and committed in {time.monotonic() - t0:.1f}s -> {tag}")


def prune(client: Any, keep: str, log: Log = print) -> int:
    """Remove this script's images of other inputs (older Synapse or entrypoint). Returns how many."""
    removed = 0
    for image in client.images.list(filters={"label": f"{LABEL_IMAGE}={IMAGE_NAME}"}):
        if image.labels.get(LABEL_INPUTS) != keep:
            for tag in image.tags or [image.id]:
                client.images.remove(tag)
            removed += 1
            log(f"pruned {image.tags or image.short_id}")
    return removed


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.images.build", description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="build even when an image with these inputs exists")
    parser.add_argument("--no-variants", action="store_true", help="skip the images that break the contract")
    parser.add_argument("--cache-dir", type=Path, help="where the rootfs tarball is kept")
    parser.add_argument("--fresh-rootfs", action="store_true",
                        help="make the rootfs anew (drops the cached tarball and base image first)")
    parser.add_argument("--prune", action="store_true", help="then remove images of other build inputs")
    args = parser.parse_args(argv)
    from tests.images.engine import Unavailable, docker_engine

    cache = args.cache_dir or cache_dir()
    try:
        with docker_engine(cache / "engine") as engine:
            if args.fresh_rootfs:
                drop_rootfs(engine.client, RootfsRecipe(), cache)
            built = ensure_image(engine.client, cache=cache, rebuild=args.rebuild or args.fresh_rootfs,
                                 variants=() if args.no_variants else FAULT_VARIANTS)
            if args.prune:
                prune(engine.client, built.inputs)
    except (Unavailable, BuildError) as exc:
        print(f"cannot build the image: {exc}", file=sys.stderr)
        return 2
    for variant, tag in built.tags.items():
        print(f"{variant}: {tag}")
    return 0


def drop_rootfs(client: Any, recipe: RootfsRecipe, cache: Path) -> None:
    """Forget the cached rootfs, tarball and base image, and so every image built on it (they carry the base's
    rootfs label): the next build makes the rootfs with mmdebstrap again."""
    (cache / f"rootfs-{recipe.suite}-{recipe.digest()[:12]}.tar").unlink(missing_ok=True)
    remove_images(client, client.images.list(filters={"label": f"{LABEL_ROOTFS}={recipe.digest()}"}))


def remove_images(client: Any, images: list[Any]) -> None:
    """Children before parents: the fault variants, then contract images, then the base."""
    order = {CONTRACT: 1, None: 2}
    for image in sorted(images, key=lambda image: order.get(image.labels.get(LABEL_VARIANT), 0)):
        client.images.remove(image.id, force=True)


if __name__ == "__main__":
    sys.exit(main())
