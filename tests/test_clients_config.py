"""Clients in the GGUF_MCP_CONFIG file, OAuth settings, the audit log setting, `gguf-mcp token new`:
every key, every refusal in one line, no secret in any of them."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gguf_mcp.clients import DEFAULT_CLIENT, METRICS_SCOPE, SCOPES, USE_SCOPES, ClientPolicy
from gguf_mcp.config import Settings, load_settings, reload_clients
from gguf_mcp.errors import ConfigError
from tests.support.cli import run_cli

KEY = "sk-canary-clients-key-0123456789abcdef"
TOKEN = "tok-canary-static-0123456789abcdef0123456789"
NAMED = "tok-canary-named-0123456789abcdef0123456789ab"
OAUTH_SECRET = "oauth-canary-secret-0123456789abcdef"
CANARIES = (KEY, TOKEN, NAMED, OAUTH_SECRET)

LOCAL = {"GGUF_BASE_URL": "http://127.0.0.1:1"}
ISSUER = {"GGUF_MCP_OAUTH_ISSUER": "https://login.example.com/", "GGUF_MCP_PUBLIC_URL": "https://mcp.example.com/mcp"}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


DEPLOYMENTS = """
[deployments.big]
deployment_id = "dep-big"

[deployments.small]
base_url = "http://127.0.0.1:8080"
max_concurrency = 2
"""


def config(tmp_path: Path, text: str, deployments: str = DEPLOYMENTS) -> dict[str, str]:
    path = tmp_path / "gguf-mcp.toml"
    path.write_text(text + deployments)  # top-level keys in `text` come before any table
    return {"GGUF_MCP_CONFIG": str(path), "MODELSLAB_API_KEY": KEY}


def load(env: dict[str, str], **flags: str) -> Settings:
    return load_settings(flags, env)


def refusal(env: dict[str, str], **flags: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env)
    message = str(info.value)
    assert "\n" not in message
    for canary in CANARIES:
        assert canary not in message
        assert sha(canary) not in message
    return message


# --- named clients -----------------------------------------------------------------------------


def test_a_named_client_is_its_token_hash_and_its_policy(tmp_path: Path) -> None:
    s = load(
        config(
            tmp_path,
            f"""
[clients.alice]
token_sha256 = "{sha(NAMED).upper()}"
deployments = ["small"]
tools = ["chat", "list_models"]
scopes = ["gguf:generate", "gguf:models"]
metrics = true
max_concurrent = 4
max_tokens = 512
over_max_tokens = "refuse"
tokens_per_hour = 10000
tokens_per_day = 100000
""",
        )
    )
    alice = s.clients["alice"]
    assert alice.token_sha256 == sha(NAMED)  # stored lowercase, as hashlib writes it
    assert alice.oauth_client_id is None and alice.oauth_subject is None
    assert alice.policy == ClientPolicy(
        deployments=frozenset({"small"}),
        tools=frozenset({"chat", "list_models"}),
        scopes=frozenset({"gguf:generate", "gguf:models", METRICS_SCOPE}),
        max_concurrent=4,
        max_tokens=512,
        over_max_tokens="refuse",
        tokens_per_hour=10000,
        tokens_per_day=100000,
    )
    assert s.deployments["small"].max_concurrency == 2 and s.deployments["big"].max_concurrency is None


def test_a_client_table_defaults_to_everything_but_metrics(tmp_path: Path) -> None:
    s = load(config(tmp_path, f'[clients.bob]\ntoken_sha256 = "{sha(NAMED)}"\n'))
    policy = s.clients["bob"].policy
    assert policy == ClientPolicy()
    assert policy.scopes == USE_SCOPES and METRICS_SCOPE not in policy.scopes
    assert policy.deployments is None and policy.tools is None and policy.over_max_tokens == "lower"


def test_the_static_token_is_client_default_with_every_scope(tmp_path: Path) -> None:
    s = load({**LOCAL, "GGUF_MCP_AUTH_TOKEN": TOKEN})
    default = s.clients[DEFAULT_CLIENT]
    assert default.token_sha256 == sha(TOKEN)
    assert default.policy.scopes == frozenset(SCOPES)
    assert list(s.clients) == [DEFAULT_CLIENT]
    assert TOKEN not in repr(s)


def test_a_default_table_limits_the_static_token_and_stdio(tmp_path: Path) -> None:
    env = config(tmp_path, "[clients.default]\nmax_concurrent = 2\ntokens_per_day = 5000\n")
    for s in (load(env), load({**env, "GGUF_MCP_AUTH_TOKEN": TOKEN})):
        default = s.clients[DEFAULT_CLIENT]
        assert default.policy.max_concurrent == 2 and default.policy.tokens_per_day == 5000
        assert default.policy.scopes == frozenset(SCOPES)
    assert load(env).clients[DEFAULT_CLIENT].token_sha256 is None  # stdio: no token, its limits all the same


def test_client_defaults_are_the_policy_of_unnamed_oauth_clients(tmp_path: Path) -> None:
    env = config(tmp_path, "[client_defaults]\nmax_tokens = 256\ntools = ['chat']\ndeployments = ['big']\n")
    defaults = load({**env, **ISSUER}).client_defaults
    assert defaults == ClientPolicy(
        deployments=frozenset({"big"}), tools=frozenset({"chat"}), scopes=USE_SCOPES, max_tokens=256
    )
    assert load(LOCAL).client_defaults == ClientPolicy()


def test_an_oauth_client_table_names_its_client_id_or_subject(tmp_path: Path) -> None:
    text = "[clients.ci]\noauth_client_id = 'ci-bot'\nmax_concurrent = 1\n[clients.ann]\noauth_subject = 'user-7'\n"
    s = load({**config(tmp_path, text), **ISSUER})
    assert s.clients["ci"].oauth_client_id == "ci-bot" and s.clients["ci"].token_sha256 is None
    assert s.clients["ann"].oauth_subject == "user-7"


def test_a_file_of_clients_only_goes_beside_a_single_deployment(tmp_path: Path) -> None:
    env = config(tmp_path, f'[clients.bob]\ntoken_sha256 = "{sha(NAMED)}"\n', deployments="")
    s = load({**env, **LOCAL})
    assert list(s.deployments) == ["default"] and "bob" in s.clients
    assert "defines no [deployments.<name>] table" in refusal(env)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f"[clients.a]\ntoken_sha256 = '{NAMED}'\n", "[clients.a] token_sha256 is not a SHA-256 in hex"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)[:-1]}'\n", "gguf-mcp token new <name>"),
        ("[clients.a]\ntoken_sha256 = 5\n", "[clients.a] token_sha256 must be a string"),
        ("[clients.a]\nmax_tokens = 100\n", "[clients.a]: set exactly one of token_sha256"),
        (
            f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\noauth_client_id = 'x'\n",
            "[clients.a]: set exactly one of token_sha256",
        ),
        ("[clients.a]\noauth_client_id = 'x'\n", "oauth_client_id names an OAuth client, and GGUF_MCP_OAUTH_ISSUER"),
        (f"[clients.'a b']\ntoken_sha256 = '{sha(NAMED)}'\n", "[clients.a b]: the name must be letters"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\ndeployments = ['huge']\n", "'huge' is not a deployment"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\ntools = ['summon']\n", "'summon' is not a tool this server"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\nscopes = ['gguf:admin']\n", "'gguf:admin' is not a scope"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\nscopes = []\n", "[clients.a] scopes must name at least one"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\ntools = 'chat'\n", "tools must be a list of strings"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\nmax_tokens = 0\n", "max_tokens = 0 is not a positive whole"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\nmax_concurrent = -1\n", "max_concurrent = -1 is not a positive"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\ntokens_per_hour = 1.5\n", "tokens_per_hour = 1.5 is not a"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\ntokens_per_day = true\n", "tokens_per_day = True is not a"),
        (
            f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\nover_max_tokens = 'cap'\n",
            "over_max_tokens = 'cap' is not 'lower' or 'refuse'",
        ),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\nmetrics = 'yes'\n", "metrics = 'yes' is not true or false"),
        (f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\ntoken = 'x'\n", "[clients.a]: unknown key 'token'; allowed:"),
        ("[client_defaults]\nmax_concurrency = 3\n", "[client_defaults]: unknown key 'max_concurrency'"),
        ("[client_defaults]\ndeployments = ['huge']\n", "[client_defaults] deployments: 'huge' is not a deployment"),
        ("clients = 3\n", "clients must be tables: [clients.<name>]"),
        ("[clients]\na = 3\n", "[clients.a] must be a table of keys"),
        (
            f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\n[clients.b]\ntoken_sha256 = '{sha(NAMED).upper()}'\n",
            "[clients.b] token_sha256 is also [clients.a]'s; give each client a token of its own",
        ),
        (
            f"[clients.default]\ntoken_sha256 = '{sha(NAMED)}'\n",
            "[clients.default] is the client of GGUF_MCP_AUTH_TOKEN",
        ),
        ("[deployments.small.x]\n", "[deployments.small]: unknown key 'x'"),
    ],
)
def test_a_bad_client_table_is_one_line_naming_the_table_and_key(tmp_path: Path, text: str, needle: str) -> None:
    message = refusal(config(tmp_path, text))
    assert message.startswith("GGUF_MCP_CONFIG (--config): "), message
    assert needle in message, message


@pytest.mark.parametrize("value", ["0", "-2", "'four'"])
def test_a_deployment_max_concurrency_is_a_positive_whole_number(tmp_path: Path, value: str) -> None:
    text = DEPLOYMENTS.replace("max_concurrency = 2", f"max_concurrency = {value}")
    assert "[deployments.small] max_concurrency = " in refusal(config(tmp_path, "", deployments=text))


def test_a_tool_the_server_does_not_serve_cannot_be_granted(tmp_path: Path) -> None:
    env = {
        **config(tmp_path, f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\ntools = ['embed']\n"),
        "GGUF_MCP_TOOLS": "chat",
    }
    assert "'embed' is not a tool this server serves (GGUF_MCP_TOOLS); choose from chat." in refusal(env)


def test_two_tables_for_one_oauth_client_are_refused(tmp_path: Path) -> None:
    text = "[clients.a]\noauth_client_id = 'bot'\n[clients.b]\noauth_client_id = 'bot'\n"
    assert "[clients.b] oauth_client_id is also [clients.a]'s; one table per OAuth client" in refusal(
        {**config(tmp_path, text), **ISSUER}
    )


def test_a_named_client_with_the_static_token_is_refused(tmp_path: Path) -> None:
    env = {**config(tmp_path, f"[clients.a]\ntoken_sha256 = '{sha(TOKEN)}'\n"), "GGUF_MCP_AUTH_TOKEN": TOKEN}
    assert "[clients.a] token_sha256 is also GGUF_MCP_AUTH_TOKEN's" in refusal(env)


# --- issue 18, hole 4: no client credential is ever a deployment's key --------------------------------


def test_a_deployment_key_naming_the_clients_token_variable_is_refused(tmp_path: Path) -> None:
    """On main this started, and /readyz sent the clients' token upstream as the deployment's key."""
    deployments = "[deployments.a]\ndeployment_id = 'dep'\napi_key_env = 'GGUF_MCP_AUTH_TOKEN'\n"
    env = {**config(tmp_path, "", deployments=deployments), "GGUF_MCP_AUTH_TOKEN": TOKEN, "GGUF_MCP_TRANSPORT": "http"}
    message = refusal(env)
    assert (
        "[deployments.a] api_key_env = 'GGUF_MCP_AUTH_TOKEN' names a gguf-mcp setting, not a deployment key" in message
    )


@pytest.mark.parametrize(
    ("env_or_table", "owner"),
    [
        ({"TEAM_KEY": TOKEN, "GGUF_MCP_AUTH_TOKEN": TOKEN}, "GGUF_MCP_AUTH_TOKEN"),
        ({"TEAM_KEY": NAMED}, "[clients.alice]"),
        ({"TEAM_KEY": OAUTH_SECRET, "oauth": "yes"}, "GGUF_MCP_OAUTH_CLIENT_FILE"),
    ],
    ids=["static token", "named client", "introspection secret"],
)
def test_a_deployment_key_equal_to_a_client_credential_is_refused(
    tmp_path: Path, env_or_table: dict[str, str], owner: str
) -> None:
    deployments = "[deployments.a]\ndeployment_id = 'dep'\napi_key_env = 'TEAM_KEY'\n"
    env = {**config(tmp_path, f"[clients.alice]\ntoken_sha256 = '{sha(NAMED)}'\n", deployments), **env_or_table}
    if env.pop("oauth", None):
        (tmp_path / "client").write_text(f"gguf-mcp\n{OAUTH_SECRET}\n")
        introspection = "https://login.example.com/introspect"
        env |= {
            **ISSUER,
            "GGUF_MCP_OAUTH_INTROSPECTION_URL": introspection,
            "GGUF_MCP_OAUTH_CLIENT_FILE": str(tmp_path / "client"),
        }
    message = refusal(env)
    assert message.startswith(f"TEAM_KEY, the key of deployment 'a', is also a client credential ({owner}): "), message
    assert "Give the deployment a key of its own" in message


@pytest.mark.parametrize("source", ["env", "file"])
def test_the_default_key_equal_to_the_clients_token_is_refused(tmp_path: Path, source: str) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    flags = {"auth_token_file": str(tmp_path / "token")} if source == "file" else {}
    env = {"GGUF_DEPLOYMENT_ID": "dep", "MODELSLAB_API_KEY": TOKEN} | (
        {"GGUF_MCP_AUTH_TOKEN": TOKEN} if source == "env" else {}
    )
    message = refusal(env, **flags)
    assert message.startswith("MODELSLAB_API_KEY, the key of deployment 'default', is also a client credential")
    assert "(GGUF_MCP_AUTH_TOKEN)" in message


def test_the_clients_token_as_a_deployment_key_stops_the_cli_with_exit_2(tmp_path: Path) -> None:
    deployments = "[deployments.a]\nbase_url = 'http://127.0.0.1:1'\napi_key_env = 'GGUF_MCP_AUTH_TOKEN'\n"
    env = {**config(tmp_path, "", deployments), "GGUF_MCP_AUTH_TOKEN": TOKEN, "GGUF_MCP_TRANSPORT": "http"}
    out = run_cli(env=env)
    assert out.returncode == 2, out.stderr
    assert out.stdout == "" and out.stderr.count("\n") == 1
    assert "api_key_env = 'GGUF_MCP_AUTH_TOKEN'" in out.stderr and TOKEN not in out.stderr


# --- who may reach HTTP ------------------------------------------------------------------------------


def test_named_clients_or_oauth_stand_in_for_the_static_token_beyond_loopback(tmp_path: Path) -> None:
    exposed = {"GGUF_MCP_TRANSPORT": "http", "GGUF_MCP_HOST": "0.0.0.0"}
    named = load({**config(tmp_path, f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\n"), **exposed})
    assert named.auth_required and named.auth_token is None
    oauth = load({**LOCAL, **ISSUER, **exposed})
    assert oauth.auth_required and oauth.auth_token is None
    assert not load(LOCAL).auth_required
    # A table for an OAuth client is no credential by itself: it needs the issuer, which is.
    message = refusal({**config(tmp_path, "[client_defaults]\nmax_tokens = 5\n"), **exposed})
    assert "exposes the server" in message and "GGUF_MCP_OAUTH_ISSUER" in message


# --- OAuth settings ----------------------------------------------------------------------------------


def test_oauth_settings_are_kept_as_given_and_the_public_host_is_allowed() -> None:
    s = load({**LOCAL, **ISSUER, "GGUF_MCP_ALLOWED_HOSTS": "other.example.com"})
    assert s.oauth_issuer == "https://login.example.com/"  # the trailing slash is part of the issuer (Auth0)
    assert s.public_url == "https://mcp.example.com/mcp"
    assert s.allowed_hosts == ("other.example.com", "mcp.example.com")
    loopback = {"GGUF_MCP_OAUTH_ISSUER": "http://127.0.0.1:9000", "GGUF_MCP_PUBLIC_URL": "http://localhost:8000/mcp"}
    assert load({**LOCAL, **loopback}).allowed_hosts == ()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            {"GGUF_MCP_OAUTH_ISSUER": "https://login.example.com"},
            "GGUF_MCP_OAUTH_ISSUER (--oauth-issuer) is set without GGUF_MCP_PUBLIC_URL (--public-url): OAuth needs",
        ),
        ({"GGUF_MCP_PUBLIC_URL": "https://mcp.example.com/mcp"}, "GGUF_MCP_PUBLIC_URL (--public-url) is set without"),
        (
            {**ISSUER, "GGUF_MCP_OAUTH_ISSUER": "http://login.example.com"},
            "GGUF_MCP_OAUTH_ISSUER (--oauth-issuer): 'http://login.example.com' must use https",
        ),
        (
            {**ISSUER, "GGUF_MCP_PUBLIC_URL": "mcp.example.com/mcp"},
            "GGUF_MCP_PUBLIC_URL (--public-url): 'mcp.example.com/mcp' is not an http(s) URL",
        ),
        ({**ISSUER, "GGUF_MCP_PUBLIC_URL": f"https://mcp.example.com/mcp?key={KEY}"}, "query or fragment"),
        ({**ISSUER, "GGUF_MCP_OAUTH_ISSUER": f"https://me:{KEY}@login.example.com"}, "must not carry credentials"),
        (
            {"GGUF_MCP_OAUTH_INTROSPECTION_URL": "https://login.example.com/introspect"},
            "(--oauth-introspection-url) needs GGUF_MCP_OAUTH_ISSUER and GGUF_MCP_PUBLIC_URL",
        ),
        (
            {**ISSUER, "GGUF_MCP_OAUTH_INTROSPECTION_URL": "https://login.example.com/introspect"},
            "and GGUF_MCP_OAUTH_CLIENT_FILE (--oauth-client-file) go together",
        ),
    ],
)
def test_bad_oauth_settings_are_one_line_each(env: dict[str, str], needle: str) -> None:
    message = refusal({**LOCAL, **env})
    assert needle in message, message


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (f"gguf-mcp\n{OAUTH_SECRET}\n", None),
        (f"gguf-mcp\r\n{OAUTH_SECRET}", None),
        (f"{OAUTH_SECRET}\n", "must hold two non-empty lines: the client id, then the client secret"),
        (f"gguf-mcp\n\n{OAUTH_SECRET}\n", "must hold two non-empty lines"),
        (f"gguf-mcp\n{OAUTH_SECRET} x\n", "has whitespace or a control character at position 37"),
    ],
)
def test_the_introspection_client_file_holds_an_id_and_a_secret(
    tmp_path: Path, content: str, needle: str | None
) -> None:
    path = tmp_path / "client"
    path.write_bytes(content.encode())
    env = {
        **LOCAL,
        **ISSUER,
        "GGUF_MCP_OAUTH_INTROSPECTION_URL": "https://login.example.com/introspect",
        "GGUF_MCP_OAUTH_CLIENT_FILE": str(path),
    }
    if needle is None:
        s = load(env)
        assert s.introspection_client_id == "gguf-mcp"
        assert s.introspection_client_secret is not None
        assert s.introspection_client_secret.get_secret_value() == OAUTH_SECRET
        assert OAUTH_SECRET in s.secrets and OAUTH_SECRET not in repr(s)
        # Pasted into another setting, it is masked like every secret.
        assert "[redacted]" in refusal({**env, "GGUF_MCP_PORT": OAUTH_SECRET})
    else:
        message = refusal(env)
        assert message.startswith(f"GGUF_MCP_OAUTH_CLIENT_FILE (--oauth-client-file): {str(path)!r}"), message
        assert needle in message


# --- the audit log ------------------------------------------------------------------------------------


def test_the_audit_log_is_a_file_to_append_to_or_stderr(tmp_path: Path) -> None:
    assert load({**LOCAL, "GGUF_MCP_AUDIT_LOG": "-"}).audit_log == "-"
    assert load({**LOCAL, "GGUF_MCP_AUDIT_LOG": str(tmp_path / "audit.jsonl")}).audit_log == str(
        tmp_path / "audit.jsonl"
    )
    assert not (tmp_path / "audit.jsonl").exists()  # loading the settings writes nothing
    assert load(LOCAL).audit_log is None
    assert "is a directory" in refusal({**LOCAL, "GGUF_MCP_AUDIT_LOG": str(tmp_path)})
    missing = refusal({**LOCAL, "GGUF_MCP_AUDIT_LOG": str(tmp_path / "no" / "audit.jsonl")})
    assert missing.startswith("GGUF_MCP_AUDIT_LOG (--audit-log): the directory of") and "does not exist" in missing


# --- reloading the clients (SIGHUP) --------------------------------------------------------------------


def test_reload_picks_up_new_and_revoked_clients_and_nothing_else(tmp_path: Path) -> None:
    env = config(tmp_path, f"[clients.alice]\ntoken_sha256 = '{sha(NAMED)}'\n")
    before = load({**env, "GGUF_MCP_TIMEOUT": "42"})
    path = Path(env["GGUF_MCP_CONFIG"])
    other = sha("another-token")
    # Bob joins, Alice is revoked, and a deployment edit waits for a restart.
    path.write_text(
        DEPLOYMENTS.replace("dep-big", "dep-new") + f"[clients.bob]\ntoken_sha256 = '{other}'\nmax_tokens = 9\n"
    )
    after = reload_clients(before)
    assert set(after.clients) == {DEFAULT_CLIENT, "bob"}
    assert after.clients["bob"].policy.max_tokens == 9
    assert after.deployments == before.deployments and after.timeout == 42
    assert before.clients["alice"].token_sha256 == sha(NAMED)  # the old settings are untouched


def test_a_bad_file_on_reload_is_one_line_and_keeps_nothing_new(tmp_path: Path) -> None:
    env = {**config(tmp_path, ""), "GGUF_MCP_AUTH_TOKEN": TOKEN}
    before = load(env)
    path = Path(env["GGUF_MCP_CONFIG"])
    for text, needle in [
        (f"[clients.a]\ntoken_sha256 = '{NAMED}'\n", "is not a SHA-256 in hex"),
        (
            f"[clients.a]\ntoken_sha256 = '{sha(KEY)}'\n",
            "MODELSLAB_API_KEY, the key of deployment 'big', is also a client credential",
        ),
        ("[clients.a\n", "is not valid TOML"),
    ]:
        path.write_text(DEPLOYMENTS + text)
        with pytest.raises(ConfigError) as info:
            reload_clients(before)
        assert needle in str(info.value) and "\n" not in str(info.value)
        assert not any(canary in str(info.value) for canary in CANARIES)
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        reload_clients(before)


def test_reload_without_a_file_keeps_the_default_client() -> None:
    before = load({**LOCAL, "GGUF_MCP_AUTH_TOKEN": TOKEN})
    assert reload_clients(before).clients == before.clients


def test_reload_refuses_to_leave_an_exposed_server_without_credentials(tmp_path: Path) -> None:
    env = {**config(tmp_path, f"[clients.a]\ntoken_sha256 = '{sha(NAMED)}'\n"), "GGUF_MCP_TRANSPORT": "http"}
    before = load({**env, "GGUF_MCP_HOST": "0.0.0.0"})
    Path(env["GGUF_MCP_CONFIG"]).write_text(DEPLOYMENTS)
    with pytest.raises(ConfigError, match="exposes the server beyond this machine"):
        reload_clients(before)


# --- gguf-mcp token new ----------------------------------------------------------------------------------


def test_token_new_prints_a_fresh_token_once_and_the_lines_that_name_its_client(tmp_path: Path) -> None:
    out = run_cli("token", "new", "alice")  # no settings at all: it needs none
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    token = re.search(r"^  (\S+)$", out.stdout, re.MULTILINE)
    assert token is not None and len(token.group(1)) >= 43  # 32 random bytes, URL-safe base64
    lines = out.stdout[out.stdout.index("[clients.alice]") :]
    assert lines == f'[clients.alice]\ntoken_sha256 = "{sha(token.group(1))}"\n'
    s = load(config(tmp_path, lines))
    assert s.clients["alice"].token_sha256 == sha(token.group(1))
    again = run_cli("token", "new", "alice")
    assert token.group(1) not in again.stdout


@pytest.mark.parametrize("name", ["a b", "default", "x" * 65, "../etc"])
def test_token_new_refuses_a_name_no_table_can_have(name: str) -> None:
    out = run_cli("token", "new", name)
    assert out.returncode == 2
    assert out.stdout == "" and out.stderr.count("\n") == 1
    assert "is not a client name" in out.stderr


def test_a_bad_token_hash_stops_the_cli_without_quoting_it(tmp_path: Path) -> None:
    out = run_cli(env={**config(tmp_path, f"[clients.a]\ntoken_sha256 = '{NAMED}'\n"), **LOCAL})
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "token_sha256 is not a SHA-256 in hex" in out.stderr
    assert NAMED not in out.stderr + out.stdout


def test_oauth_without_a_public_url_stops_the_cli() -> None:
    out = run_cli(env={**LOCAL, "GGUF_MCP_OAUTH_ISSUER": "https://login.example.com"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "GGUF_MCP_PUBLIC_URL" in out.stderr


def test_the_readme_file_and_clients_load_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Several deployments") : readme.index("## Check the setup")]
    blocks = re.findall(r"^```toml\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2
    env = {**config(tmp_path, blocks[0] + blocks[1], deployments=""), "TEAM_B_MODELSLAB_KEY": "sk-team-b-01234567"}
    s = load({**env, **ISSUER})
    assert set(s.clients) == {DEFAULT_CLIENT, "ci-bot", "ops", "claude-web"}
    assert s.clients["ci-bot"].policy.deployments == frozenset({"qwen-coder"})
    assert METRICS_SCOPE in s.clients["ops"].policy.scopes
    assert s.client_defaults.tokens_per_day == 500000
    assert s.deployments["laptop"].max_concurrency == 2


# Any value of any known key (and an unknown one) in each kind of table: the file loads or gives one line.
_KEYS = [
    *("deployment_id", "base_url", "api_key_env", "description", "max_concurrency"),
    *("token_sha256", "oauth_client_id", "oauth_subject", "deployments", "tools", "scopes", "metrics"),
    *("max_concurrent", "max_tokens", "over_max_tokens", "tokens_per_hour", "tokens_per_day", "bogus"),
]
_WORDS = st.sampled_from(["big", "chat", "gguf:models", "lower", "refuse", sha(NAMED), "GGUF_MCP_AUTH_TOKEN", ""])
_SCALARS = st.one_of(st.integers(-3, 2**70), st.booleans(), st.floats(allow_nan=False), _WORDS, st.text(max_size=8))
_VALUES = st.one_of(_SCALARS, st.lists(st.one_of(_WORDS, st.integers(0, 3)), max_size=3))


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value) if isinstance(value, str | float) else str(value)


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tables=st.lists(
        st.tuples(
            st.sampled_from(["deployments.d", "clients.c", "clients.default", "client_defaults"]),
            st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4),
        ),
        max_size=3,
    )
)
def test_any_table_content_is_settings_or_one_config_error(
    tmp_path: Path, tables: list[tuple[str, dict[str, object]]]
) -> None:
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items()) for name, keys in tables)
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    env = {**ISSUER, "GGUF_MCP_CONFIG": str(path)} | ({} if "[deployments." in text else LOCAL)
    message = ""
    try:
        load_settings({}, env)
    except ConfigError as exc:
        message = str(exc)
    assert "\n" not in message
