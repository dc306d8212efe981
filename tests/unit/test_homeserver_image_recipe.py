"""The Complement-style image's recipe, without an engine (tests/images/recipe.py): the rootfs recipe, the
pinned closure of Synapse, the settings, the inputs hash, tags, labels and the commit changes; and when the
engine helper may start a dockerd (tests/images/engine.py)."""

from __future__ import annotations

import io
import sys
import tarfile
from dataclasses import FrozenInstanceError, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from qa.homeserver.synapse_config import build_synapse_config
from tests.images import entrypoint as ep
from tests.images import recipe as rc
from tests.images.build import concatenated_tar
from tests.images.engine import DEFAULT_HOST, endpoint, why_not_start

# --- recipe ------------------------------------------------------------------------------------------------------


def test_the_rootfs_is_python3_extracted_without_docs_into_a_tarball() -> None:
    argv = rc.RootfsRecipe().argv(Path("/c/out.tar"))
    assert argv[:4] == ["mmdebstrap", "--variant=extract", "--format=tar", "--include=python3"]
    assert argv[4:8] == [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "doc", "locale", "info")]
    assert rc.RootfsRecipe() == rc.RootfsRecipe("bookworm", "3.11", "extract", ("python3",), tuple(
        f"/usr/share/{d}/*" for d in ("man", "doc", "locale", "info")), "")
    assert argv[-2:] == ["bookworm", "/c/out.tar"]
    assert rc.RootfsRecipe(packages=("python3", "tzdata"), mirror="http://m/debian").argv(Path("o"))[-3:] == [
        "bookworm", "o", "http://m/debian"]
    assert "--include=python3,tzdata" in rc.RootfsRecipe(packages=("python3", "tzdata")).argv(Path("o"))


@pytest.mark.parametrize("change", [{"suite": "trixie"}, {"python": "3.13"}, {"variant": "minbase"},
                                    {"packages": ("python3", "x")}, {"excludes": ()}, {"mirror": "http://m"}])
def test_every_field_of_the_recipe_changes_its_digest(change: dict[str, Any]) -> None:
    base = rc.RootfsRecipe()
    assert base.digest() == rc.RootfsRecipe().digest()
    assert replace(base, **change).digest() != base.digest()
    assert len(base.digest()) == 64


def test_the_rootfs_tarball_is_named_by_suite_and_digest() -> None:
    recipe = rc.RootfsRecipe()
    assert rc.rootfs_name(recipe) == f"rootfs-bookworm-{recipe.digest()[:12]}.tar"


def test_a_recipe_cannot_change_under_its_digest() -> None:
    recipe = rc.RootfsRecipe()
    with pytest.raises(FrozenInstanceError):
        recipe.suite = "trixie"  # type: ignore[misc]


def test_the_layer_brings_the_accounts_the_extract_variant_does_not_make() -> None:
    users = [line.split(":") for line in rc.PASSWD.splitlines()]
    assert [(u[0], u[2], u[3]) for u in users] == [("root", "0", "0"), ("nobody", "65534", "65534")]
    assert all(len(user) == 7 for user in users) and rc.PASSWD.endswith("\n")
    groups = [line.split(":") for line in rc.GROUP.splitlines()]
    assert [(g[0], g[2]) for g in groups] == [("root", "0"), ("nogroup", "65534")]
    assert all(len(group) == 4 for group in groups) and rc.GROUP.endswith("\n")


@dataclass
class FakeDist:
    name: str
    version: str
    requires: list[str] | None = None
    metadata: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = {"Name": self.name}


def fake_index(*dists: FakeDist) -> Any:
    by_name = {canonicalize_name(d.name): d for d in dists}
    calls: list[str] = []

    def distribution(name: str) -> FakeDist:
        calls.append(name)
        return by_name[canonicalize_name(name)]

    distribution.calls = calls  # type: ignore[attr-defined]
    return distribution


def test_the_closure_follows_requirements_extras_and_markers() -> None:
    index = fake_index(
        FakeDist("Root", "1.0", ["a>=1", "Twisted[tls]>=2", "never; python_version < '3'", "opt; extra == 'x'"]),
        FakeDist("a", "1.1", ["Root"]),  # a cycle ends
        FakeDist("twisted", "24.1", ["zope_interface", "idna; extra == 'tls'", "other; extra == 'conch'"]),
        FakeDist("zope.interface", "6.0"),
        FakeDist("idna", "3.0", None),
    )
    closure = rc.requirement_closure("Root", index)
    assert closure == {"root": "1.0", "a": "1.1", "twisted": "24.1", "zope-interface": "6.0", "idna": "3.0"}
    assert rc.pins(closure) == ["a==1.1", "idna==3.0", "root==1.0", "twisted==24.1", "zope-interface==6.0"]


def test_a_distribution_met_again_with_more_extras_is_walked_again() -> None:
    index = fake_index(
        FakeDist("root", "1", ["lib", "b"]),
        FakeDist("b", "1", ["lib[x]"]),
        FakeDist("lib", "2", ["plain", "extra-only; extra == 'x'"]),
        FakeDist("plain", "1"),
        FakeDist("extra-only", "1"),
    )
    assert set(rc.requirement_closure("root", index)) == {"root", "b", "lib", "plain", "extra-only"}


def test_a_distribution_met_again_with_no_new_extras_is_not_walked_again() -> None:
    index = fake_index(FakeDist("root", "1", ["lib", "b", "c"]), FakeDist("b", "1", ["lib"]),
                       FakeDist("c", "1", ["lib"]), FakeDist("lib", "2", ["leaf"]), FakeDist("leaf", "1"))
    assert rc.requirement_closure("root", index) == {"root": "1", "b": "1", "c": "1", "lib": "2", "leaf": "1"}
    assert index.calls.count("leaf") == 1


def test_a_requirement_met_twice_does_not_end_the_walk() -> None:
    index = fake_index(FakeDist("root", "1", ["leaf", "shared", "b"]), FakeDist("b", "1", ["shared"]),
                       FakeDist("shared", "1"), FakeDist("leaf", "1"))
    assert set(rc.requirement_closure("root", index)) == {"root", "b", "shared", "leaf"}


def test_the_image_keeps_qa_test_settings_and_leaves_per_container_ones_to_the_entrypoint() -> None:
    full = build_synapse_config(workdir=Path("/data"), port=8008)
    config = rc.base_config(full)
    assert config["bcrypt_rounds"] == 4
    assert config["rc_message"] == full["rc_message"]
    assert config["rc_login"]["failed_attempts"]["burst_count"] >= 1000
    assert config["trusted_key_servers"] == []
    assert set(full) - set(config) == {
        "server_name", "public_baseurl", "listeners", "pid_file", "database", "log_config", "media_store_path",
        "signing_key_path", "registration_shared_secret", "macaroon_secret_key", "form_secret",
        "enable_registration", "registration_requires_token", "federation_domain_whitelist"}


def test_the_inputs_digest_changes_with_every_input_and_only_then() -> None:
    recipe, pinned, config, sources = rc.RootfsRecipe(), ["a==1", "b==2"], {"k": 1}, {"e.py": b"x"}
    digest = rc.inputs_digest(recipe, pinned, config, sources)
    assert digest == rc.inputs_digest(recipe, list(reversed(pinned)), {"k": 1}, {"e.py": b"x"})
    others = [
        rc.inputs_digest(replace(recipe, suite="trixie"), pinned, config, sources),
        rc.inputs_digest(recipe, ["a==1", "b==3"], config, sources),
        rc.inputs_digest(recipe, pinned, {"k": 2}, sources),
        rc.inputs_digest(recipe, pinned, config, {"e.py": b"y"}),
        rc.inputs_digest(recipe, pinned, config, {"e.py": b"x", "b.py": b""}),
    ]
    assert len({digest, *others}) == 6
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_the_inputs_digest_of_fixed_inputs_is_fixed() -> None:
    """Same inputs, same image: the hash is a cache key, so it must not depend on anything but the inputs."""
    recipe = rc.RootfsRecipe("suite", "3.x", "variant", ("pkg",), ("/x/*",), "http://m")
    digest = rc.inputs_digest(recipe, ["a==1"], {"k": [1, {"n": None}]}, {"e.py": b"print()"})
    assert digest == GOLDEN_INPUTS


GOLDEN_INPUTS = "eeb7a91aa52b5c777908ba63a88bb9e68ed4cbf2f2aaa6bbb2f9b6f3f4117ea1"


def test_tags_and_labels_carry_the_synapse_version_and_the_inputs() -> None:
    inputs = "0123456789abcdef" * 4
    assert rc.image_tag("1.163.2", inputs) == "matrix-qa/complement-synapse:1.163.2-0123456789ab"
    assert rc.image_tag("1.163.2", inputs, "exit") == "matrix-qa/complement-synapse:1.163.2-0123456789ab-exit"
    assert rc.image_labels("1.163.2", inputs) == {
        "org.matrix-qa.image": "complement-synapse", "org.matrix-qa.synapse-version": "1.163.2",
        "org.matrix-qa.inputs": inputs, "org.matrix-qa.variant": "contract"}
    assert rc.image_labels("1", inputs, "exit")["org.matrix-qa.variant"] == "exit"


def test_the_commit_exposes_the_contract_ports_runs_the_entrypoint_and_declares_no_volume() -> None:
    changes = rc.commit_changes({"org.matrix-qa.variant": "contract", "b": 'say "hi"'})
    assert changes[0] == 'ENTRYPOINT ["python3", "/opt/matrix-qa/entrypoint.py"]'
    for line in ("EXPOSE 8008/tcp", "EXPOSE 8448/tcp", "ENV PYTHONPATH=/opt/synapse", "ENV PYTHONUNBUFFERED=1",
                 "WORKDIR /data"):
        assert line in changes
    assert changes[-2:] == ['LABEL b="say \\"hi\\""', 'LABEL org.matrix-qa.variant="contract"']
    assert not any(line.startswith(("VOLUME", "CMD")) for line in changes)


def test_a_fault_variant_switches_its_fault_on_and_says_so_in_its_label() -> None:
    labels = rc.image_labels("1.0", "f" * 64)
    changes = rc.fault_changes(labels, "no-versions")
    assert changes[0] == "ENV MATRIX_QA_IMAGE_FAULT=no-versions"
    assert 'LABEL org.matrix-qa.variant="no-versions"' in changes
    assert 'LABEL org.matrix-qa.variant="contract"' not in changes
    assert 'LABEL org.matrix-qa.synapse-version="1.0"' in changes
    assert len(changes) == 1 + len(labels)
    assert rc.FAULT_VARIANTS == ep.FAULTS


@pytest.mark.parametrize(("wanted", "host", "editable", "source"), [
    ("auto", "3.11", False, "host"), ("auto", "3.12", False, "pip"), ("auto", "3.11", True, "pip"),
    ("pip", "3.11", False, "pip"), ("host", "3.11", False, "host"), ("pip", "3.12", True, "pip"),
])
def test_the_synapse_layer_comes_from_the_host_only_when_it_fits(wanted: str, host: str, editable: bool,
                                                                 source: str) -> None:
    assert rc.synapse_source(wanted, host, rc.RootfsRecipe(), editable) == source


def test_forcing_the_host_where_it_cannot_serve_says_why() -> None:
    refusals = [("host", "3.12", False), ("host", "3.11", True), ("wheel", "3.11", False)]
    said = []
    for wanted, host, editable in refusals:
        with pytest.raises(ValueError) as refused:
            rc.synapse_source(wanted, host, rc.RootfsRecipe(), editable)
        said.append(str(refused.value))
    assert said == [
        "the host's Synapse cannot be copied into the image: Python 3.12, the image's is 3.11",
        "the host's Synapse cannot be copied into the image: an editable install",
        "the Synapse layer comes from one of auto, host, pip, not 'wheel'",
    ]


def test_pip_installs_exactly_the_pins_as_wheels_for_the_image_python() -> None:
    argv = rc.pip_argv(rc.RootfsRecipe(python="3.13"), Path("/t"), ["a==1", "b==2"])
    assert argv == [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", "/t",
                    "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.13",
                    "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "linux_x86_64", "a==1", "b==2"]


def test_the_cache_dir_follows_its_variable_then_xdg_then_home() -> None:
    assert rc.cache_dir({"MATRIX_QA_IMAGE_CACHE": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c")
    assert rc.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/matrix-qa/images")
    assert rc.cache_dir({}) == Path.home() / ".cache" / "matrix-qa" / "images"


def test_images_are_removed_children_first() -> None:
    image = {rc.LABEL_IMAGE: "complement-synapse"}
    kinds = [{rc.LABEL_IMAGE: "synapse"}, {**image, rc.LABEL_VARIANT: "contract"}, {**image, rc.LABEL_VARIANT: "exit"},
             {}, {rc.LABEL_VARIANT: "contract"}]
    assert [rc.removal_rank(labels) for labels in kinds] == [2, 1, 0, 2, 2]


def test_the_synapse_layer_is_named_by_its_base_and_pins_only() -> None:
    recipe = rc.RootfsRecipe()
    digest = rc.synapse_digest(recipe, ["b==2", "a==1"])
    assert digest == rc.synapse_digest(recipe, ["a==1", "b==2"]) != rc.synapse_digest(recipe, ["a==1"])
    assert digest != rc.synapse_digest(replace(recipe, suite="trixie"), ["a==1", "b==2"])
    assert len(digest) == 64
    assert rc.synapse_tag("1.163.2", digest) == f"matrix-qa/synapse:1.163.2-{digest[:12]}"
    assert rc.synapse_labels("1.163.2", digest, recipe) == {"org.matrix-qa.image": "synapse",
                                                            "org.matrix-qa.synapse-version": "1.163.2",
                                                            "org.matrix-qa.synapse-pins": digest,
                                                            "org.matrix-qa.rootfs": recipe.digest()}


# --- build: the one tar stream of rootfs and layer ------------------------------------------------------------


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_two_tars_join_into_one_stream_with_every_member(tmp_path: Path) -> None:
    first = make_tar(tmp_path / "a.tar", {"usr/bin/python3": b"x" * 700, "etc/os-release": b"debian"})
    second = make_tar(tmp_path / "b.tar", {"opt/synapse/synapse/__init__.py": b"v = 1\n", "opt/empty": b""})
    joined = b"".join(concatenated_tar(first, second, chunk=100))
    with tarfile.open(fileobj=io.BytesIO(joined)) as tar:
        found = {member.name: tar.extractfile(member).read() for member in tar}
    assert found == {"usr/bin/python3": b"x" * 700, "etc/os-release": b"debian",
                     "opt/synapse/synapse/__init__.py": b"v = 1\n", "opt/empty": b""}
    assert joined.endswith(second.read_bytes())
    assert len(joined) == len(second.read_bytes()) + 512 * (2 + 2 + 1)  # two headers, 700 bytes, debian


# --- engine ---------------------------------------------------------------------------------------------------


def test_a_dockerd_is_started_only_for_the_default_socket_when_installed_and_root() -> None:
    assert why_not_start({}, "/usr/sbin/dockerd", 0) is None
    assert why_not_start({"DOCKER_HOST": DEFAULT_HOST}, "/usr/sbin/dockerd", 0) is None
    assert "apt-get install docker.io" in why_not_start({}, None, 0)
    assert "needs root" in why_not_start({}, "/usr/sbin/dockerd", 1000)
    assert "DOCKER_HOST=tcp://h:2375" in why_not_start({"DOCKER_HOST": "tcp://h:2375"}, "/usr/sbin/dockerd", 0)
    assert endpoint({}) == DEFAULT_HOST == "unix:///var/run/docker.sock"
    assert endpoint({"DOCKER_HOST": "tcp://h:2375"}) == "tcp://h:2375"
