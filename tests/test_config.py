"""Configuration: every URL form users paste, every bad value, one clear line each."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gguf_mcp.config import GGUF_CLOUD_ROOT, OPTIONS, Settings, load_settings, normalize_base_url
from gguf_mcp.errors import ConfigError
from tests.support.cli import run_cli

KEY = "sk-canary-config-0123456789"


def settings(env: dict[str, str], **flags: str) -> Settings:
    return load_settings(flags, env)


def config_error(env: dict[str, str], **flags: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env)
    message = str(info.value)
    assert "\n" not in message
    assert KEY not in message
    return message


@pytest.mark.parametrize(
    "raw",
    [
        "https://modelslab.com/api/gguf/dep-1",
        "https://modelslab.com/api/gguf/dep-1/",
        "https://modelslab.com/api/gguf/dep-1/v1",
        "https://modelslab.com/api/gguf/dep-1/v1/",
        "  https://modelslab.com/api/gguf/dep-1/v1//  ",
    ],
)
def test_every_base_url_form_normalises_to_the_root(raw: str) -> None:
    assert normalize_base_url(raw, "GGUF_BASE_URL") == "https://modelslab.com/api/gguf/dep-1"


@pytest.mark.parametrize(
    ("raw", "root"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("https://llm.example.com/proxy/v1/", "https://llm.example.com/proxy"),
    ],
)
def test_self_hosted_llama_server_urls_normalise_too(raw: str, root: str) -> None:
    assert normalize_base_url(raw, "GGUF_BASE_URL") == root


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("modelslab.com/api/gguf/x", "not an http(s) URL"),
        ("ftp://example.com", "not an http(s) URL"),
        ("http://", "not an http(s) URL"),
        ("https://user:pw@example.com", "must not carry credentials"),
        ("https://example.com/v1?key=abc", "query or fragment"),
        ("http://example.com:99999", "invalid port"),
    ],
)
def test_bad_base_urls_name_the_setting_and_the_fix(raw: str, needle: str) -> None:
    message = config_error({"GGUF_BASE_URL": raw})
    assert message.startswith("GGUF_BASE_URL (--base-url)")
    assert needle in message


def test_deployment_id_builds_the_gguf_cloud_url() -> None:
    s = settings({"GGUF_DEPLOYMENT_ID": "dep_42", "MODELSLAB_API_KEY": KEY})
    dep = s.deployments["default"]
    assert dep.base_url == f"{GGUF_CLOUD_ROOT}/dep_42"
    assert dep.api_key is not None and dep.api_key.get_secret_value() == KEY
    assert s.default_deployment == "default"


@pytest.mark.parametrize("bad", ["a/b", "../admin", "x y", "id?x=1", "-lead"])
def test_deployment_ids_cannot_steer_the_path(bad: str) -> None:
    assert "not a deployment id" in config_error({"GGUF_DEPLOYMENT_ID": bad, "MODELSLAB_API_KEY": KEY})


def test_gguf_cloud_without_a_key_is_refused_at_start() -> None:
    message = config_error({"GGUF_DEPLOYMENT_ID": "dep"})
    assert message.startswith("MODELSLAB_API_KEY is not set")


def test_self_hosted_server_may_run_keyless() -> None:
    s = settings({"GGUF_BASE_URL": "http://127.0.0.1:8080"})
    assert s.deployments["default"].api_key is None
    assert s.secrets == ()


def test_nothing_configured_says_what_to_set() -> None:
    message = config_error({})
    assert "GGUF_DEPLOYMENT_ID" in message and "GGUF_BASE_URL" in message and "GGUF_MCP_CONFIG" in message


def test_id_and_url_together_are_ambiguous() -> None:
    assert "only one of" in config_error(
        {"GGUF_DEPLOYMENT_ID": "a", "GGUF_BASE_URL": "http://x", "MODELSLAB_API_KEY": KEY}
    )


def test_flags_win_over_the_environment() -> None:
    s = settings({"GGUF_BASE_URL": "http://env:1", "GGUF_MCP_TIMEOUT": "5"}, base_url="http://flag:2", timeout="7")
    assert s.deployments["default"].base_url == "http://flag:2"
    assert s.timeout == 7.0


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"GGUF_MCP_TIMEOUT": "soon"}, "GGUF_MCP_TIMEOUT (--timeout): 'soon' is not a positive number"),
        ({"GGUF_MCP_TIMEOUT": "-1"}, "GGUF_MCP_TIMEOUT"),
        ({"GGUF_MCP_TIMEOUT": "nan"}, "GGUF_MCP_TIMEOUT"),
        ({"GGUF_MCP_TIMEOUT": "inf"}, "GGUF_MCP_TIMEOUT"),
        (
            {"GGUF_MCP_MAX_RETRIES": "-1"},
            "GGUF_MCP_MAX_RETRIES (--max-retries): '-1' is not a whole number from 0 to 10",
        ),
        ({"GGUF_MCP_MAX_RETRIES": "2.5"}, "GGUF_MCP_MAX_RETRIES"),
        ({"GGUF_MCP_PORT": "http"}, "GGUF_MCP_PORT"),
        ({"GGUF_MCP_TRANSPORT": "sse"}, "GGUF_MCP_TRANSPORT (--transport): 'sse' is not 'stdio' or 'http'"),
        ({"GGUF_MCP_LOG_LEVEL": "loud"}, "GGUF_MCP_LOG_LEVEL"),
    ],
)
def test_malformed_values_name_the_setting(env: dict[str, str], needle: str) -> None:
    assert needle in config_error({"GGUF_BASE_URL": "http://127.0.0.1:1", **env})


def test_defaults_suit_long_generations() -> None:
    s = settings({"GGUF_BASE_URL": "http://127.0.0.1:1"})
    assert s.timeout >= 300
    assert s.max_retries == 3
    assert (s.transport, s.host, s.port) == ("stdio", "127.0.0.1", 8000)


def test_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    s = settings({"GGUF_DEPLOYMENT_ID": "d"}, api_key_file=str(key_file))
    key = s.deployments["default"].api_key
    assert key is not None and key.get_secret_value() == KEY


def test_missing_or_empty_key_file_is_a_clear_error(tmp_path: Path) -> None:
    assert "cannot read" in config_error({"GGUF_DEPLOYMENT_ID": "d"}, api_key_file=str(tmp_path / "nope"))
    (tmp_path / "empty").write_text("\n")
    assert "is empty" in config_error({"GGUF_DEPLOYMENT_ID": "d"}, api_key_file=str(tmp_path / "empty"))


def test_the_key_never_shows_in_reprs() -> None:
    s = settings({"GGUF_DEPLOYMENT_ID": "d", "MODELSLAB_API_KEY": KEY})
    assert KEY not in repr(s)
    assert KEY not in str(s.deployments)


# --- several deployments from TOML --------------------------------------------------------------

MULTI = """
default = "big"

[deployments.big]
deployment_id = "dep-big"
description = "Llama 70B for hard questions"

[deployments.local]
base_url = "http://127.0.0.1:8080/v1/"
api_key_env = "LOCAL_KEY"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gguf-mcp.toml"
    path.write_text(text)
    return str(path)


def test_toml_names_several_deployments_each_with_its_key(tmp_path: Path) -> None:
    s = settings({"GGUF_MCP_CONFIG": write(tmp_path, MULTI), "MODELSLAB_API_KEY": KEY, "LOCAL_KEY": "other"})
    assert list(s.deployments) == ["big", "local"]
    assert s.default_deployment == "big"
    big, local = s.deployments["big"], s.deployments["local"]
    assert big.base_url == f"{GGUF_CLOUD_ROOT}/dep-big" and big.description == "Llama 70B for hard questions"
    assert local.base_url == "http://127.0.0.1:8080" and local.key_env == "LOCAL_KEY"
    assert local.api_key is not None and local.api_key.get_secret_value() == "other"
    assert set(s.secrets) == {KEY, "other"}


def test_toml_default_falls_back_to_the_first(tmp_path: Path) -> None:
    text = MULTI.replace('default = "big"', "")
    s = settings({"GGUF_MCP_CONFIG": write(tmp_path, text), "MODELSLAB_API_KEY": KEY})
    assert s.default_deployment == "big"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("default = 'x'\n[deployments.a]\nbase_url='http://h'\n", "default = 'x' is not one of the deployments (a)"),
        ("[deployments.a]\nbaseurl='http://h'\n", "unknown key 'baseurl'"),
        ("[deployments.a]\ndescription='no url'\n", "set exactly one of deployment_id or base_url"),
        ("[deployments.a]\ndeployment_id='d'\nbase_url='http://h'\n", "set exactly one of"),
        ("[deployments.a]\nbase_url=5\n", "base_url must be a string"),
        ("[deployments.a]\nbase_url='http://h'\napi_key_env='NOT A NAME'\n", "not an environment variable name"),
        ("[deployments.'a/b']\nbase_url='http://h'\n", "the name must be"),
        ("[deployments.a]\ndeployment_id='d'\napi_key_env='MISSING_KEY'\n", "MISSING_KEY is not set"),
        ("deployments = 3\n", "deployments must be tables: [deployments.<name>]"),
        ("# nothing here\n", "defines no [deployments.<name>] table"),
        ("[servers.a]\n", "unknown top-level key 'servers'"),
        ("[deployments.a\n", "is not valid TOML"),
    ],
)
def test_bad_toml_gets_one_line_naming_the_place(tmp_path: Path, text: str, needle: str) -> None:
    message = config_error({"GGUF_MCP_CONFIG": write(tmp_path, text), "MODELSLAB_API_KEY": KEY})
    assert message.startswith("GGUF_MCP_CONFIG (--config)") or "is not set" in message
    assert needle in message


def test_toml_plus_single_deployment_settings_is_refused(tmp_path: Path) -> None:
    message = config_error({"GGUF_MCP_CONFIG": write(tmp_path, MULTI), "GGUF_BASE_URL": "http://x"})
    assert "unset the other" in message


def test_missing_toml_file(tmp_path: Path) -> None:
    assert "cannot read" in config_error({"GGUF_MCP_CONFIG": str(tmp_path / "none.toml")})


# --- the command line ---------------------------------------------------------------------------


def test_help_documents_every_setting() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for option in OPTIONS:
        assert option.env in text
        if option.flag:
            assert option.flag in text


def test_a_config_error_is_one_line_on_stderr_with_exit_code_2() -> None:
    out = run_cli(env={"GGUF_MCP_TIMEOUT": "soon", "GGUF_BASE_URL": "http://127.0.0.1:1"})
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1
    assert "GGUF_MCP_TIMEOUT" in out.stderr and "Traceback" not in out.stderr


def test_a_key_given_as_a_flag_is_refused_without_echoing_it() -> None:
    out = run_cli("--api-key", KEY, env={"GGUF_BASE_URL": "http://127.0.0.1:1"})
    assert out.returncode == 2
    assert KEY not in out.stderr + out.stdout
    assert "MODELSLAB_API_KEY" in out.stderr


# --- HTTP exposure and tool selection --------------------------------------------------------------

LOCAL = {"GGUF_BASE_URL": "http://127.0.0.1:1"}


def test_http_beyond_loopback_without_a_token_refuses_to_start() -> None:
    message = config_error({**LOCAL, "GGUF_MCP_TRANSPORT": "http", "GGUF_MCP_HOST": "0.0.0.0"})
    assert message.startswith("GGUF_MCP_HOST (--host) = '0.0.0.0' exposes the server")
    assert "GGUF_MCP_AUTH_TOKEN" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_http_needs_no_token(host: str) -> None:
    assert settings({**LOCAL, "GGUF_MCP_TRANSPORT": "http", "GGUF_MCP_HOST": host}).auth_token is None


def test_a_token_allows_any_bind_and_is_a_secret(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-canary-0123456789abcdef0123456789\n")
    s = settings({**LOCAL, "GGUF_MCP_TRANSPORT": "http", "GGUF_MCP_HOST": "0.0.0.0"}, auth_token_file=str(token_file))
    assert s.auth_token is not None and s.auth_token.get_secret_value() == "tok-canary-0123456789abcdef0123456789"
    assert "tok-canary-0123456789abcdef0123456789" in s.secrets
    assert "tok-canary-0123456789abcdef0123456789" not in repr(s)


def test_lists_and_switches_parse() -> None:
    s = settings(
        {
            **LOCAL,
            "GGUF_MCP_ALLOWED_HOSTS": "mcp.example.com, mcp.example.com:443",
            "GGUF_MCP_ALLOWED_ORIGINS": "https://app.example.com",
            "GGUF_MCP_STATELESS": "true",
            "GGUF_MCP_TOOLS": "chat, messages,chat",
            "GGUF_MCP_LOG_FORMAT": "json",
        }
    )
    assert s.allowed_hosts == ("mcp.example.com", "mcp.example.com:443")
    assert s.allowed_origins == ("https://app.example.com",)
    assert s.stateless is True
    assert s.tools == ("chat", "messages")
    assert s.log_format == "json"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"GGUF_MCP_TOOLS": "chat,summon"}, "GGUF_MCP_TOOLS (--tools): unknown tool(s) summon; choose from"),
        ({"GGUF_MCP_STATELESS": "maybe"}, "GGUF_MCP_STATELESS (--stateless): 'maybe' is not true or false"),
        ({"GGUF_MCP_LOG_FORMAT": "xml"}, "GGUF_MCP_LOG_FORMAT"),
        ({"GGUF_MCP_ALLOWED_HOSTS": "a.com b.com"}, "contains spaces"),
        ({"GGUF_MCP_DEADLINE": "0"}, "GGUF_MCP_DEADLINE (--deadline)"),
    ],
)
def test_bad_http_and_tool_settings(env: dict[str, str], needle: str) -> None:
    assert needle in config_error({**LOCAL, **env})


def test_a_token_given_as_a_flag_is_refused_without_echoing_it() -> None:
    out = run_cli("--auth-token", "tok-canary-flag", env=LOCAL)
    assert out.returncode == 2
    assert "tok-canary-flag" not in out.stderr + out.stdout


# --- Secrets and files that are not what they should be (one line each, never a traceback) -------

TOKEN = "tok-canary-config-5f1e0d9c8b7a6f5e4d3c2b1a"


@pytest.mark.parametrize(
    "value", [KEY + "\nsecond-line", KEY + "\r\n", "sk canary", KEY + "\x00", KEY + "\u200b"], ids=repr
)
@pytest.mark.parametrize("where", ["env", "file"])
def test_a_key_with_whitespace_or_control_characters_is_refused_naming_the_setting(
    tmp_path: Path, value: str, where: str
) -> None:
    if where == "env":
        message = config_error({"GGUF_DEPLOYMENT_ID": "d", "MODELSLAB_API_KEY": value})
        assert message.startswith("MODELSLAB_API_KEY: ")
    else:
        (tmp_path / "key").write_bytes(value.encode() + b"\n")
        message = config_error({"GGUF_DEPLOYMENT_ID": "d"}, api_key_file=str(tmp_path / "key"))
        assert message.startswith("MODELSLAB_API_KEY")
    assert "whitespace or a control character" in message
    assert "second-line" not in message and "canary" not in message


def test_a_token_with_a_second_line_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\nmore\n")
    message = config_error({**LOCAL, "GGUF_MCP_TRANSPORT": "http"}, auth_token_file=str(tmp_path / "token"))
    assert message.startswith("GGUF_MCP_AUTH_TOKEN")
    assert TOKEN not in message


def test_one_trailing_line_break_in_a_secret_file_is_fine(tmp_path: Path) -> None:
    for ending in ("\n", "\r\n", ""):
        (tmp_path / "key").write_text(KEY + ending, newline="")
        s = settings({"GGUF_DEPLOYMENT_ID": "d"}, api_key_file=str(tmp_path / "key"))
        assert s.secrets == (KEY,)


@pytest.mark.parametrize("which", ["api_key_file", "auth_token_file", "config"])
def test_a_file_that_is_not_utf8_is_one_line_exit_2(tmp_path: Path, which: str) -> None:
    path = tmp_path / which
    path.write_bytes(b"\xff\xfe not utf-8 \xc3\x28\n")
    flag = {"api_key_file": "--api-key-file", "auth_token_file": "--auth-token-file", "config": "--config"}[which]
    env = {} if which == "config" else {"GGUF_BASE_URL": "http://127.0.0.1:1"}
    out = run_cli(flag, str(path), env=env | {"GGUF_MCP_TRANSPORT": "http"})
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "is not UTF-8 text" in out.stderr


@pytest.mark.parametrize("source", ["file", "env"])
def test_a_secret_pasted_into_another_setting_is_masked_wherever_it_came_from(tmp_path: Path, source: str) -> None:
    """The key (from its file, or its variable) pasted into the base URL must not be quoted back."""
    (tmp_path / "key").write_text(KEY + "\n")
    flags = {"api_key_file": str(tmp_path / "key")} if source == "file" else {}
    env = {"GGUF_BASE_URL": KEY} | ({} if source == "file" else {"MODELSLAB_API_KEY": KEY})
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env)
    assert KEY not in str(info.value)
    assert "[redacted]" in str(info.value)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with pytest.raises(ConfigError) as info:
        load_settings(
            {"auth_token_file": str(token_file)}, {"GGUF_BASE_URL": "http://127.0.0.1:1", "GGUF_MCP_PORT": TOKEN}
        )
    assert TOKEN not in str(info.value)


def test_a_reverse_proxy_name_without_a_token_refuses_to_start() -> None:
    message = config_error({**LOCAL, "GGUF_MCP_TRANSPORT": "http", "GGUF_MCP_ALLOWED_HOSTS": "mcp.example.com"})
    assert message.startswith("GGUF_MCP_ALLOWED_HOSTS (--allowed-hosts) names 'mcp.example.com'")
    assert "GGUF_MCP_AUTH_TOKEN" in message
    assert settings({**LOCAL, "GGUF_MCP_TRANSPORT": "http", "GGUF_MCP_ALLOWED_HOSTS": "localhost:8443"})


def test_a_short_token_is_refused_with_how_to_make_a_long_one() -> None:
    message = config_error(
        {**LOCAL, "GGUF_MCP_TRANSPORT": "http", "GGUF_MCP_HOST": "0.0.0.0", "GGUF_MCP_AUTH_TOKEN": "abc"}
    )
    assert message.startswith("GGUF_MCP_AUTH_TOKEN is 3 characters; use at least 32")
    assert "secrets.token_urlsafe(32)" in message


def test_a_key_named_by_a_toml_table_is_checked_like_the_default_one(tmp_path: Path) -> None:
    config = write(tmp_path, "[deployments.a]\ndeployment_id = 'd'\napi_key_env = 'TEAM_KEY'\n")
    message = config_error({"GGUF_MCP_CONFIG": config, "TEAM_KEY": KEY + "\r\n"})
    assert message.startswith("TEAM_KEY: the value has whitespace or a control character at position")


@pytest.mark.parametrize(
    ("flag", "setting"),
    [
        ("api_key_file", "MODELSLAB_API_KEY_FILE (--api-key-file)"),
        ("auth_token_file", "GGUF_MCP_AUTH_TOKEN_FILE (--auth-token-file)"),
    ],
)
def test_a_two_line_secret_file_is_named_by_its_file_setting(tmp_path: Path, flag: str, setting: str) -> None:
    """The user set the file, not the variable: the error names the file setting and its path (issue 18, hole 7)."""
    path = tmp_path / "secret"
    path.write_text(TOKEN + "\nsecond-line\n")
    message = config_error({**LOCAL, "GGUF_MCP_TRANSPORT": "http"}, **{flag: str(path)})
    assert message.startswith(
        f"{setting}: {str(path)!r} has whitespace or a control character at position {len(TOKEN) + 1}"
    )
    assert TOKEN not in message and "second-line" not in message


def test_every_number_setting_states_its_own_limits_when_refused() -> None:
    """The hint is read from the field's constraints: a new number setting cannot lack one or misstate it."""
    for option in (o for o in OPTIONS if o.number):
        field = Settings.model_fields[option.dest]
        bounds = {name: getattr(m, name) for m in field.metadata for name in ("ge", "gt", "le") if hasattr(m, name)}
        message = config_error({**LOCAL, option.env: "lots"})
        assert message.startswith(f"{option.setting}: 'lots' is not a"), message
        if "le" in bounds:
            assert f" to {bounds['le']}." in message, message
        if bounds.get("gt") == 0:
            assert "a positive number" in message, message


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            {"GGUF_MCP_MAX_CONNECTIONS": "0"},
            "GGUF_MCP_MAX_CONNECTIONS (--max-connections): '0' is not a whole number from 1 to 65535.",
        ),
        ({"GGUF_MCP_SESSION_IDLE_TIMEOUT": "-3"}, "'-3' is not a positive number of seconds."),
        ({"GGUF_MCP_LOG_LEVEL": "loud"}, "'loud' is not 'debug', 'info', 'warning' or 'error'."),
    ],
)
def test_limits_in_messages_come_from_the_fields(env: dict[str, str], needle: str) -> None:
    assert needle in config_error({**LOCAL, **env})


# Text as a flag or variable can carry it: no NUL (argv and the environment cannot hold one).
SETTING_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from([o.env for o in OPTIONS]), SETTING_TEXT, max_size=4))
@example(values={"GGUF_BASE_URL": "http://[::1"})
@example(values={"GGUF_MCP_CONFIG": "~no-such-user-here/gguf-mcp.toml"})
@example(values={"GGUF_MCP_AUDIT_LOG": "~no-such-user-here/audit.jsonl"})
def test_any_text_in_any_setting_is_settings_or_one_config_error(values: dict[str, str]) -> None:
    """`load_settings` raises ConfigError and nothing else (a `~user` path, an unclosed IPv6 bracket...)."""
    message = ""
    try:
        load_settings({}, {**LOCAL, **values})
    except ConfigError as exc:
        message = str(exc)
    assert "\n" not in message
