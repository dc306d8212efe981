"""What the Complement-style image is made of and how it is named: recipe, pins, settings, hash, labels. Pure.

tests/images/build.py does the I/O (mmdebstrap, the engine); everything it decides goes through here, so the
unit tests (tests/unit/test_homeserver_image_recipe.py) check it without an engine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.images.entrypoint import (
    CLIENT_PORT,
    DATA_DIR,
    FAULT_ENV,
    FAULTS,
    FEDERATION_PORT,
    SELF_PATH,
)

IMAGE_REPO = "matrix-qa/complement-synapse"
SYNAPSE_REPO = "matrix-qa/synapse"
LABEL_IMAGE = "org.matrix-qa.image"
LABEL_SYNAPSE = "org.matrix-qa.synapse-version"
LABEL_INPUTS = "org.matrix-qa.inputs"
LABEL_VARIANT = "org.matrix-qa.variant"
LABEL_ROOTFS = "org.matrix-qa.rootfs"
LABEL_PINS = "org.matrix-qa.synapse-pins"
IMAGE_NAME = "complement-synapse"
SYNAPSE_NAME = "synapse"  # the rootfs + /opt/synapse, one import, shared by every entrypoint built on it
CONTRACT = "contract"  # the variant that meets the contract; the others are the faults of the entrypoint
FAULT_VARIANTS = FAULTS
SYNAPSE_DIR = "opt/synapse"
SYNAPSE_SOURCES = ("auto", "host", "pip")
# Keys of qa's test config that belong to one container, not to the image: the entrypoint sets them.
# federation_domain_whitelist goes too: the image serves federation on 8448, as the contract asks.
PER_CONTAINER_KEYS = ("server_name", "public_baseurl", "listeners", "pid_file", "database", "log_config",
                      "media_store_path", "signing_key_path", "registration_shared_secret", "macaroon_secret_key",
                      "form_secret", "enable_registration", "registration_requires_token",
                      "federation_domain_whitelist")

# What base-passwd's maintainer scripts would have written (the extract variant runs none).
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


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


def requirement_closure(root: str, distribution: Callable[[str], Any] = importlib.metadata.distribution,
                        ) -> dict[str, str]:
    """{canonical name: version} of `root` and every installed distribution it needs, extras followed.

    A distribution is walked once per set of extras it is asked with, which also ends cycles."""
    versions: dict[str, str] = {}
    walked: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        dist = distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        if (key, extras) in walked:
            continue
        walked.add((key, extras))
        versions[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in sorted(extras) or [""]):
                todo.append((req.name, frozenset(req.extras)))
    return versions


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


def commit_changes(labels: Mapping[str, str]) -> list[str]:
    """Dockerfile lines `docker commit` applies: the contract's ports, the entrypoint, the labels. No VOLUME:
    the data stays in the container, so a restart keeps it and a removal takes it along."""
    lines = [f"ENTRYPOINT {json.dumps(['python3', str(SELF_PATH)])}",
             f"ENV PYTHONPATH=/{SYNAPSE_DIR}", "ENV PYTHONUNBUFFERED=1", f"EXPOSE {CLIENT_PORT}/tcp",
             f"EXPOSE {FEDERATION_PORT}/tcp", f"WORKDIR {DATA_DIR}"]
    return lines + label_lines(labels)


def fault_changes(labels: Mapping[str, str], fault: str) -> list[str]:
    """A variant is its contract image with the fault switched on by the environment, and labelled so."""
    return [f"ENV {FAULT_ENV}={fault}", *label_lines({**labels, LABEL_VARIANT: fault})]


def label_lines(labels: Mapping[str, str]) -> list[str]:
    return [f"LABEL {key}={json.dumps(value)}" for key, value in sorted(labels.items())]


def synapse_source(wanted: str, host_python: str, recipe: RootfsRecipe, editable: bool) -> str:
    """Where /opt/synapse comes from: `host` (copy the host's installed distributions, as they are) when it has
    the image's Python minor and nothing editable, else `pip` (the same pins, wheels for the image's Python).
    `wanted` is `auto`, or one of the two to force it; the host is refused when it cannot serve."""
    if wanted not in SYNAPSE_SOURCES:
        raise ValueError(f"the Synapse layer comes from one of {', '.join(SYNAPSE_SOURCES)}, not {wanted!r}")
    can = host_python == recipe.python and not editable
    if wanted == "host" and not can:
        why = "an editable install" if editable else f"Python {host_python}, the image's is {recipe.python}"
        raise ValueError(f"the host's Synapse cannot be copied into the image: {why}")
    return "host" if wanted in ("auto", "host") and can else "pip"


def pip_argv(recipe: RootfsRecipe, target: Path, pinned: Iterable[str]) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", recipe.python,
            "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
            "--platform", "linux_x86_64", *pinned]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("MATRIX_QA_IMAGE_CACHE"):
        return Path(env["MATRIX_QA_IMAGE_CACHE"])
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matrix-qa" / "images"


def rootfs_name(recipe: RootfsRecipe) -> str:
    return f"rootfs-{recipe.suite}-{recipe.digest()[:12]}.tar"


def synapse_digest(recipe: RootfsRecipe, pinned: Iterable[str]) -> str:
    """What the Synapse image depends on: the rootfs recipe and the pinned distributions, nothing of ours."""
    return _sha256(json.dumps([recipe.digest(), sorted(pinned)]))


def synapse_tag(synapse_version: str, digest: str) -> str:
    return f"{SYNAPSE_REPO}:{synapse_version}-{digest[:12]}"


def synapse_labels(synapse_version: str, digest: str, recipe: RootfsRecipe) -> dict[str, str]:
    """The Synapse image's labels. The images built on it inherit them: the pins' one is what a rebuild goes by,
    the rootfs' one what dropping the rootfs goes by."""
    return {LABEL_IMAGE: SYNAPSE_NAME, LABEL_SYNAPSE: synapse_version, LABEL_PINS: digest,
            LABEL_ROOTFS: recipe.digest()}


def removal_rank(labels: Mapping[str, str]) -> int:
    """Children before parents: fault variants (0) sit on a contract image (1), on the Synapse image (2)."""
    if labels.get(LABEL_IMAGE) == IMAGE_NAME:
        return 1 if labels.get(LABEL_VARIANT) == CONTRACT else 0
    return 2
