"""The image backend's pure decisions (qa.homeserver.image_options, qa.homeserver.backends.image): the
--homeserver-env items, the registration chosen, the Tuwunel preset, the container's environment and the start
judgement. No engine, no server."""

from __future__ import annotations

from typing import Any

import pytest

from qa.homeserver import registry
from qa.homeserver.backends import image as image_backend
from qa.homeserver.image import env_secrets
from qa.homeserver.image_options import (
    DEFAULT_SERVER_NAME,
    DESCRIBED,
    ENV_REGISTRATION_SHARED_SECRET,
    ENV_REGISTRATION_TOKEN,
    MODES,
    NO_VERSIONS_AFTER_S,
    OPEN,
    SHARED_SECRET,
    TOKEN,
    TUWUNEL,
    Preset,
    Registration,
    container_env,
    fresh_token,
    judge_start,
    parse_env,
    resolve_registration,
    server_name_in,
)
from qa.kernel.errors import ConfigError
from qa.shared.redact import MIN_SECRET_LENGTH

TOKEN_VALUE = "token-0123456789"
SECRET_VALUE = "secret-0123456789"

# --- --homeserver-env ----------------------------------------------------------------------------------------


def test_env_items_become_a_mapping_keeping_empty_values_and_later_equals_signs() -> None:
    assert parse_env(["SERVER_NAME=hs1", "EMPTY=", "_X1=a=b=c"]) == {"SERVER_NAME": "hs1", "EMPTY": "",
                                                                     "_X1": "a=b=c"}
    assert parse_env(None) == {} and parse_env([]) == {}


@pytest.mark.parametrize(("item", "fragment"), [
    ("NOEQUALS", "expects KEY=VALUE, got 'NOEQUALS' (no '=')"),
    ("=value", "'' is not a variable name"),
    ("1ABC=x", "'1ABC' is not a variable name"),
    ("A-B=x", "'A-B' is not a variable name"),
    ("A B=x", "'A B' is not a variable name"),
    ("AB\n=x", "is not a variable name"),
    ("A=x\x00y", "A=...: the value holds a NUL or a newline"),
    ("A=x\ny", "A=...: the value holds a NUL or a newline"),
])
def test_a_bad_env_item_is_refused_naming_the_flag_and_the_item(item: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_env([item])
    assert str(caught.value).startswith("--homeserver-env ") and fragment in str(caught.value)


def test_a_key_given_twice_is_refused_with_both_items() -> None:
    with pytest.raises(ConfigError, match=r"^--homeserver-env gives A twice \(A='1' and 'A=2'\); give it once$"):
        parse_env(["A=1", "A=2"])


def test_the_flag_named_in_env_errors_is_the_callers() -> None:
    with pytest.raises(ConfigError, match=r"^--other expects KEY=VALUE"):
        parse_env(["x"], flag="--other")


# --- registration ----------------------------------------------------------------------------------------------


def resolve(mode: str | None = None, *, token: str | None = None, secret: str | None = None,
            env: dict[str, str] | None = None, default: str | None = None) -> Registration:
    return resolve_registration(mode, token=token, shared_secret=secret, env=env or {}, default=default,
                                needed_by="--homeserver-x")


def test_open_needs_nothing_and_says_so() -> None:
    chosen = resolve(OPEN)
    assert (chosen.mode, chosen.secret, chosen.secrets) == (OPEN, None, [])
    assert chosen.described == "open registration (m.login.dummy)"


def test_an_images_default_is_open_and_an_explicit_mode_beats_it() -> None:
    assert resolve(default=OPEN).mode == OPEN
    assert resolve(TOKEN, token=TOKEN_VALUE, default=OPEN) == Registration(TOKEN, TOKEN_VALUE, (TOKEN_VALUE,))


@pytest.mark.parametrize(("mode", "kwargs", "secret"), [
    (TOKEN, {"token": TOKEN_VALUE}, TOKEN_VALUE),
    (TOKEN, {"env": {ENV_REGISTRATION_TOKEN: TOKEN_VALUE}}, TOKEN_VALUE),
    (TOKEN, {"token": TOKEN_VALUE, "env": {ENV_REGISTRATION_TOKEN: "other-token-xyz"}}, TOKEN_VALUE),
    (SHARED_SECRET, {"secret": SECRET_VALUE}, SECRET_VALUE),
    (SHARED_SECRET, {"env": {ENV_REGISTRATION_SHARED_SECRET: f"  {SECRET_VALUE} "}}, SECRET_VALUE),
])
def test_a_mode_takes_its_secret_from_the_flag_before_the_environment(mode: str, kwargs: dict[str, Any],
                                                                      secret: str) -> None:
    chosen = resolve(mode, **kwargs)
    assert (chosen.mode, chosen.secret) == (mode, secret)
    assert chosen.secrets[0] == secret


def test_without_a_mode_the_one_credential_given_decides() -> None:
    assert resolve(token=TOKEN_VALUE).mode == TOKEN
    assert resolve(secret=SECRET_VALUE).mode == SHARED_SECRET
    assert resolve(env={ENV_REGISTRATION_TOKEN: TOKEN_VALUE}).mode == TOKEN
    assert resolve(env={ENV_REGISTRATION_SHARED_SECRET: SECRET_VALUE}).mode == SHARED_SECRET
    # A flag decides over an environment variable of the other kind, which is still kept out of the artifacts.
    chosen = resolve(token=TOKEN_VALUE, env={ENV_REGISTRATION_SHARED_SECRET: SECRET_VALUE})
    assert (chosen.mode, chosen.secrets) == (TOKEN, [TOKEN_VALUE, SECRET_VALUE])


@pytest.mark.parametrize("kwargs", [
    {"token": TOKEN_VALUE, "secret": SECRET_VALUE},
    {"env": {ENV_REGISTRATION_TOKEN: TOKEN_VALUE, ENV_REGISTRATION_SHARED_SECRET: SECRET_VALUE}},
])
def test_both_credentials_without_a_mode_is_never_guessed(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="both a registration token and a registration shared secret are given; "
                                          "say which to use with --registration token or --registration shared"):
        resolve(**kwargs)


def test_nothing_given_names_every_way() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(env={ENV_REGISTRATION_TOKEN: "  "})
    message = str(caught.value)
    assert message.startswith("--homeserver-x needs a way to create test users: --registration open")
    assert "--registration-token TOKEN" in message and "--registration-shared-secret SECRET" in message
    assert ENV_REGISTRATION_TOKEN in message and ENV_REGISTRATION_SHARED_SECRET in message


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^--registration 'dummy' is not a registration mode; use open, "):
        resolve("dummy")


@pytest.mark.parametrize(("mode", "kwargs", "flag"), [
    (OPEN, {"token": TOKEN_VALUE}, "--registration-token"),
    (OPEN, {"secret": SECRET_VALUE}, "--registration-shared-secret"),
    (TOKEN, {"token": TOKEN_VALUE, "secret": SECRET_VALUE}, "--registration-shared-secret"),
    (SHARED_SECRET, {"token": TOKEN_VALUE, "secret": SECRET_VALUE}, "--registration-token"),
])
def test_a_credential_flag_the_mode_does_not_use_is_refused(mode: str, kwargs: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=f"^{flag} is not used with --registration {mode}$"):
        resolve(mode, **kwargs)


def test_an_unused_credential_from_the_environment_is_left_alone_but_redacted() -> None:
    chosen = resolve(OPEN, env={ENV_REGISTRATION_TOKEN: TOKEN_VALUE})
    assert (chosen.mode, chosen.secret, chosen.secrets) == (OPEN, None, [TOKEN_VALUE])


@pytest.mark.parametrize(("mode", "flag", "variable"), [
    (TOKEN, "--registration-token", ENV_REGISTRATION_TOKEN),
    (SHARED_SECRET, "--registration-shared-secret", ENV_REGISTRATION_SHARED_SECRET),
])
def test_a_mode_without_its_secret_names_the_flag_and_the_variable(mode: str, flag: str, variable: str) -> None:
    with pytest.raises(ConfigError, match=f"^--registration {mode} needs {flag} \\(or the environment variable "
                                          f"{variable}\\)$"):
        resolve(mode)


@pytest.mark.parametrize("length", [1, MIN_SECRET_LENGTH - 1])
def test_a_secret_too_short_to_redact_is_refused(length: int) -> None:
    with pytest.raises(ConfigError, match=r"^--registration-token \(or MATRIX_QA_REGISTRATION_TOKEN\) is shorter "
                                          f"than {MIN_SECRET_LENGTH} characters: too short"):
        resolve(TOKEN, token="x" * length)
    assert resolve(TOKEN, token="x" * MIN_SECRET_LENGTH).secret == "x" * MIN_SECRET_LENGTH


def test_every_mode_is_described_and_no_secret_is_in_a_repr() -> None:
    assert set(DESCRIBED) == set(MODES) == {"open", "shared-secret", "token"}
    assert "admin/v1/register" in DESCRIBED[SHARED_SECRET] and "registration_token" in DESCRIBED[TOKEN]
    assert TOKEN_VALUE not in repr(Registration(TOKEN, TOKEN_VALUE, (TOKEN_VALUE,)))


# --- the container's environment, the preset -------------------------------------------------------------------


def test_the_users_env_wins_over_the_preset_the_server_name_and_the_token() -> None:
    env = container_env(server_name="hs1", server_name_env="SN", preset_env={"A": "1", "B": "2"},
                        user_env={"B": "user", "SN": "mine", "T": "user-token"}, token_env="T", token="fresh")
    assert env == {"SN": "mine", "A": "1", "B": "user", "T": "user-token"}
    assert container_env(server_name="hs1", server_name_env="SERVER_NAME", preset_env={}, user_env={}) == {
        "SERVER_NAME": "hs1"}
    assert container_env(server_name="hs1", server_name_env="SN", preset_env={}, user_env={}, token_env="T",
                         token="fresh") == {"SN": "hs1", "T": "fresh"}
    assert "T" not in container_env(server_name="h", server_name_env="SN", preset_env={}, user_env={},
                                    token_env="T", token=None)


def test_the_server_name_is_the_containers_own() -> None:
    assert server_name_in({}) == DEFAULT_SERVER_NAME == "localhost"
    assert server_name_in({"SERVER_NAME": "hs1.test"}) == "hs1.test"
    assert server_name_in({"SERVER_NAME": ""}) == "localhost"
    assert server_name_in({"SERVER_NAME": "x", "TUWUNEL_SERVER_NAME": "t"}, "TUWUNEL_SERVER_NAME") == "t"


def test_the_tuwunel_preset_is_its_image_environment_and_token_variable() -> None:
    assert TUWUNEL.image == "ghcr.io/matrix-construct/tuwunel:v1.5.1"
    assert (TUWUNEL.server_name_env, TUWUNEL.token_env) == ("TUWUNEL_SERVER_NAME", "TUWUNEL_REGISTRATION_TOKEN")
    assert TUWUNEL.env["TUWUNEL_PORT"] == "8008" and TUWUNEL.env["TUWUNEL_ALLOW_FEDERATION"] == "false"
    assert TUWUNEL.version_paths[0] == "/_matrix/federation/v1/version"
    a, b = fresh_token(), fresh_token()
    assert a != b and len(a) >= 24


def test_secret_looking_env_values_are_redacted_when_long_enough() -> None:
    env = {"REGISTRATION_SHARED_SECRET": "complement", "API_KEY": "k" * 12, "DB_PASSWORD": "short",
           "SERVER_NAME": "a-long-server-name", "my_token": "t" * 8}
    assert env_secrets(env) == ["complement", "k" * 12, "t" * 8]


# --- the start judgement -----------------------------------------------------------------------------------------


def judge(**kwargs: Any) -> str | None:
    args: dict[str, Any] = {"status": "running", "exit_code": None, "last_answer": "no answer yet",
                            "waited_s": 1.0, "timeout_s": 60.0, "not_found_for_s": 0.0}
    return judge_start(**{**args, **kwargs})


def test_a_starting_container_is_waited_for() -> None:
    assert judge() is None
    assert judge(status="created", waited_s=59.9) is None
    assert judge(last_answer="HTTP 502", waited_s=59.0) is None
    assert judge(last_answer="HTTP 404", not_found_for_s=NO_VERSIONS_AFTER_S - 0.1) is None


def test_an_exit_is_judged_at_once_with_its_code() -> None:
    assert judge(status="exited", exit_code=3, waited_s=0.4) == (
        "the container exited at once with exit code 3, before answering /_matrix/client/versions")
    assert judge(status="dead", exit_code=137, waited_s=4.9).startswith("the container exited at once")
    assert judge(status="exited", exit_code=1, waited_s=5.0) == (
        "the container exited after 5s with exit code 1, before answering /_matrix/client/versions")


def test_a_vanished_container_is_judged_at_once() -> None:
    assert judge(status="gone") == "the container disappeared before answering /_matrix/client/versions"


def test_a_404_kept_up_is_no_versions_long_before_the_deadline() -> None:
    assert NO_VERSIONS_AFTER_S == 10.0
    assert judge(last_answer="HTTP 404", not_found_for_s=NO_VERSIONS_AFTER_S) == (
        "no /_matrix/client/versions: it answered HTTP 404 for 10s (the contract asks for 200)")
    assert judge(last_answer="HTTP 500", not_found_for_s=30.0) is None, "only a 404 is an answer that stays"


def test_the_deadline_names_the_last_answer() -> None:
    assert judge(waited_s=60.0, last_answer="ClientConnectorError: refused") == (
        "did not answer /_matrix/client/versions within 60s (ClientConnectorError: refused)")
    assert judge(waited_s=61.0, timeout_s=0.5, last_answer="HTTP 503") == (
        "did not answer /_matrix/client/versions within 0.5s (HTTP 503)")


# --- the backend's own checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "fragment"), [
    (None, "--homeserver-image needs an image name"),
    ("   ", "--homeserver-image needs an image name"),
    ("-x", "is not an image reference"),
    ("a b:1", "is not an image reference"),
    ("a\tb", "is not an image reference"),
    ("a\x1bb", "is not an image reference"),
])
def test_a_bad_image_name_is_refused(image: str | None, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        image_backend.image_name({"homeserver_image": image})
    assert image_backend.image_name({"homeserver_image": " matrix-qa/x:1 "}) == "matrix-qa/x:1"


def test_an_images_registration_defaults_to_open_and_takes_the_shared_flags() -> None:
    assert image_backend.registration({}, {}).mode == OPEN
    chosen = image_backend.registration({"registration": SHARED_SECRET, "registration_shared_secret": "complement"},
                                        {})
    assert (chosen.mode, chosen.secret) == (SHARED_SECRET, "complement")


@pytest.mark.parametrize(("in_use", "message"), [
    ("external", "--homeserver-image starts a homeserver from an image; it cannot be combined with "
                 "--homeserver-url"),
    ("synapse", "it cannot be combined with --homeserver synapse"),
    ("tuwunel", "it cannot be combined with --homeserver tuwunel (--tuwunel-image chooses the preset's image)"),
])
def test_an_image_with_another_backend_is_one_clear_message(in_use: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.misplaced(in_use, {"homeserver_image": "x:1"})


def test_shared_options_are_misplaced_only_where_the_backend_in_use_does_not_take_them() -> None:
    settings = {"registration": "open", "homeserver_env": ["A=1"]}
    assert registry.misplaced("synapse", settings) == ["--registration", "--homeserver-env"]
    assert registry.misplaced("image", settings) == []
    assert registry.misplaced("external", settings) == ["--homeserver-env"]
    assert registry.misplaced("tuwunel", settings) == ["--registration"]


def test_the_image_backend_is_chosen_by_its_flag() -> None:
    assert registry.choose(None, {"homeserver_image": "x:1"}) == "image"
    assert registry.get("image").choice is None, "chosen by --homeserver-image, not --homeserver image"


# --- every word the user reads, and every value a container gets, pinned whole -------------------------------


def test_the_names_and_descriptions_are_exact() -> None:
    assert (ENV_REGISTRATION_TOKEN, ENV_REGISTRATION_SHARED_SECRET) == (
        "MATRIX_QA_REGISTRATION_TOKEN", "MATRIX_QA_REGISTRATION_SHARED_SECRET")
    assert DESCRIBED == {"open": "open registration (m.login.dummy)",
                         "shared-secret": "shared-secret registration (/_synapse/admin/v1/register)",
                         "token": "a registration token (m.login.registration_token)"}


@pytest.mark.parametrize(("item", "message"), [
    ("1X=2", "--homeserver-env '1X=2': '1X' is not a variable name (letters, digits and '_', not starting with a "
             "digit)"),
    ("A=x\ny", "--homeserver-env A=...: the value holds a NUL or a newline, which an environment variable cannot "
               "carry"),
])
def test_env_errors_word_for_word(item: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_env([item])
    assert str(caught.value) == message


def test_registration_errors_word_for_word() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve()
    assert str(caught.value) == (
        "--homeserver-x needs a way to create test users: --registration open, or --registration-token TOKEN or "
        "--registration-shared-secret SECRET (or the environment variables MATRIX_QA_REGISTRATION_TOKEN / "
        "MATRIX_QA_REGISTRATION_SHARED_SECRET, which keep them out of the process list)")
    with pytest.raises(ConfigError) as caught:
        resolve(SHARED_SECRET, secret="short")
    assert str(caught.value) == (
        f"--registration-shared-secret (or MATRIX_QA_REGISTRATION_SHARED_SECRET) is shorter than {MIN_SECRET_LENGTH} "
        "characters: too short to keep out of the artifacts (redaction ignores strings that short)")


def test_registrations_and_presets_are_values_that_cannot_change() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        Registration(OPEN).mode = TOKEN  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        TUWUNEL.image = "other"  # type: ignore[misc]
    bare = Preset(name="p", image="i", env={}, server_name_env="SN")
    assert (bare.token_env, bare.version_paths) == (None, ())
    assert Registration(OPEN) == Registration(OPEN, None, ())


def test_the_tuwunel_preset_whole() -> None:
    expected = Preset(
        name="tuwunel", image="ghcr.io/matrix-construct/tuwunel:v1.5.1",
        env={"TUWUNEL_DATABASE_PATH": "/var/lib/tuwunel", "TUWUNEL_ADDRESS": "0.0.0.0", "TUWUNEL_PORT": "8008",
             "TUWUNEL_ALLOW_REGISTRATION": "true", "TUWUNEL_ALLOW_FEDERATION": "false",
             "TUWUNEL_ALLOW_ENCRYPTION": "true", "TUWUNEL_TRUSTED_SERVERS": "[]"},
        server_name_env="TUWUNEL_SERVER_NAME", token_env="TUWUNEL_REGISTRATION_TOKEN",
        version_paths=("/_matrix/federation/v1/version", "/_tuwunel/server_version"))
    assert expected == TUWUNEL


def test_a_fresh_token_is_24_random_bytes() -> None:
    import base64

    token = fresh_token()
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == 24
