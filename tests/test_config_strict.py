"""Strict configuration: bad tokens and unknown enum values are refused at start, in one line.

The token checks need no broker (the API refuses its tokens before it connects to Kafka).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.shared.auth import TokenAuthenticator, parse_account_tokens
from services.shared.errors import ConfigError
from services.shared.settings import Settings

GOOD = "good-token-0123456789"
OTHER = "other-token-0123456789"
ADMIN = "admin-token-0123456789"


@pytest.mark.parametrize(("spec", "entry", "reason"), [
    (f"2:{GOOD},3:{GOOD}", "entry 2 (account 3)", "already given in entry 1 (account 2)"),
    (f"2:{GOOD},2:{GOOD}", "entry 2 (account 2)", "already given in entry 1 (account 2)"),
    (f"2:{GOOD},3:short-token", "entry 2 (account 3)", "shorter than 16 characters"),
    (f"2:{GOOD},3:{ADMIN}", "entry 2 (account 3)", "equals AKECE_API_ADMIN_TOKEN"),
    (f"2:{GOOD},x:{OTHER}", "entry 2", "is not `account_id:token`"),
    (f"2:{GOOD},{OTHER}", "entry 2", "is not `account_id:token`"),
    (f"2:{GOOD},3:", "entry 2", "is not `account_id:token`"),
    (f"2:{GOOD},\u0663:{OTHER}", "entry 2", "is not `account_id:token`"),  # a non-ASCII digit
])
def test_bad_account_tokens_are_refused_naming_the_entry(spec: str, entry: str, reason: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_account_tokens(spec, ADMIN)
    message = str(refused.value)
    assert entry in message and reason in message
    assert "\n" not in message
    for token in (GOOD, OTHER, ADMIN, "short-token"):
        assert token not in message


def test_hash_is_part_of_an_inline_token() -> None:
    assert parse_account_tokens("2:abc#def-0123456789") == {"abc#def-0123456789": 2}


def test_hash_starts_a_comment_only_at_the_start_of_a_file_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# tokens of account 2\n  # indented comment\n2:{GOOD}\n3:abc#def-0123456789\n")
    assert parse_account_tokens(f"@{path}") == {GOOD: 2, "abc#def-0123456789": 3}
    path.write_text(f"2:{GOOD}\n3:abc #ok\n")  # formerly cut to `abc`: now a short token, refused
    with pytest.raises(ConfigError, match=f"{path} line 2 \\(account 3\\): token shorter"):
        parse_account_tokens(f"@{path}")
    path.write_text(f"2:{GOOD},3:{GOOD}\n")
    with pytest.raises(ConfigError, match=f"{path} line 1 entry 2 \\(account 3\\)"):
        parse_account_tokens(f"@{path}")


def test_admin_token_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="AKECE_API_ADMIN_TOKEN is shorter than 16"):
        TokenAuthenticator.from_settings(Settings(api={"admin_token": "s3cret"}))
    with pytest.raises(ConfigError, match="equals AKECE_API_ADMIN_TOKEN"):
        TokenAuthenticator.from_settings(Settings(api={"admin_token": ADMIN, "account_tokens": f"1:{ADMIN}"}))
    auth = TokenAuthenticator.from_settings(Settings(api={"admin_token": ADMIN, "account_tokens": f"1:{GOOD}"}))
    assert auth.authenticate(GOOD) is not None and auth.authenticate(GOOD).account_id == 1  # type: ignore[union-attr]
    assert auth.authenticate(ADMIN) is not None and auth.authenticate(ADMIN).is_admin  # type: ignore[union-attr]


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AKECE_")}
    base.update({"AKECE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "AKECE_API_PORT": "0", "AKECE_METRICS_PORT": "0"})
    return subprocess.run([sys.executable, "-m", "services", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_api_process_refuses_a_shared_token_in_one_line() -> None:
    shared = "shared-token-0123456789"
    done = run_cli(["api"], {"AKECE_API_ADMIN_TOKEN": ADMIN, "AKECE_API_ACCOUNT_TOKENS": f"2:{shared},3:{shared}"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "akece-webhooks: AKECE_API_ACCOUNT_TOKENS entry 2 (account 3): token already given in entry 1 "
        "(account 2); every token must be unique"]
    assert shared not in done.stderr + done.stdout


@pytest.mark.parametrize(("name", "value", "allowed"), [
    ("AKECE_ROUTER_VALIDATION", "none", "'full' or 'structural'"),
    ("AKECE_KAFKA_COMPRESSION", "snappy", "'none', 'gzip', 'lz4' or 'zstd'"),
    ("AKECE_LOG_LEVEL", "verbose", "'debug', 'info', 'warning' or 'error'"),
    ("AKECE_LOG_FORMAT", "xml", "'auto', 'json' or 'console'"),
])
def test_enum_settings_accept_only_their_values(name: str, value: str, allowed: str) -> None:
    done = run_cli(["router"], {name: value})
    assert done.returncode == 2
    line = f"akece-webhooks: invalid configuration: {name}={value}: Input should be {allowed}"
    assert done.stderr.strip().splitlines() == [line]


def test_enum_settings_accept_their_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("AKECE_ROUTER_VALIDATION", "full"), ("AKECE_KAFKA_COMPRESSION", "zstd"),
                        ("AKECE_LOG_LEVEL", "WARNING"), ("AKECE_LOG_FORMAT", "console")):
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.router.validation, settings.kafka.compression) == ("full", "zstd")
    assert (settings.log_level, settings.log_format) == ("warning", "console")
