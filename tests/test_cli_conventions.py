"""One convention for every command (docs/cli.md): global options, help and examples, quiet failures, output.

- every option has a help text and every command an example in its help;
- ``--bootstrap-server``, ``--topic-prefix`` and ``--env-file`` work before and after the command and win as
  documented; a missing env file is one line and exit 2;
- a broker that is down gives each one-shot command exactly one line on stderr (no client library lines);
- colours only on a terminal, never with NO_COLOR, and plain text (no escape codes) in a pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.fixtures import cli_env
from services import cli
from services.contract.topics import Topics, topic_specs
from services.devtools import cli as devtools_cli
from services.devtools.ports import free_port
from services.run_commands import child_argv
from services.shared.cli import GLOBAL_OPTIONS, load_settings
from services.shared.exits import Exit
from services.shared.settings import Settings

HIDDEN = {"--child"}  # a parent's argument to its children (``deliver|router --processes N``), not for people
ENV_KEYS = ("AKECE_KAFKA_BOOTSTRAP_SERVERS", "AKECE_TOPIC_PREFIX", "AKECE_KAFKA_CLIENT_ID", "AKECE_LOG_LEVEL")


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


# --- help ------------------------------------------------------------------------------------------
def commands() -> list[tuple[str, argparse.ArgumentParser]]:
    top = cli.parser()
    return [("akece-webhooks", top), *((p.prog, p) for p in cli.subcommands(top))]


def test_every_command_is_walked() -> None:
    names = {name for name, _ in commands()}
    for expected in ("akece-webhooks dlq list", "akece-webhooks webhooks get", "akece-webhooks kafka start",
                     "akece-webhooks topics ensure", "akece-webhooks status", "akece-webhooks alerts render"):
        assert expected in names
    assert len(names) >= 30


@pytest.mark.parametrize(("name", "parser"), commands(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_option_has_help_and_every_command_an_example(name: str, parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{name} {choice.dest}: subcommand without help"
            continue
        label = "/".join(action.option_strings) or action.dest
        if label in HIDDEN:
            continue
        assert action.help and action.help != argparse.SUPPRESS, f"{name} {label}: no help text"
    shown = parser.format_help()
    assert parser.epilog and re.search(r"^examples?:\n  (\w+=\S+ )*akece-webhooks ", parser.epilog), name
    for line in parser.epilog.splitlines()[1:]:
        assert f"\n{line}\n" in f"\n{shown}\n", f"{name}: the example is not shown as written: {line!r}"
    for option in ("--bootstrap-server", "--topic-prefix", "--env-file"):
        assert option in shown, f"{name}: no {option}"


def test_commands_that_print_tables_take_json() -> None:
    tables = ("dlq list", "dlq show", "dlq replay", "recover", "status", "webhooks list", "webhooks get",
              "webhooks create", "webhooks update", "webhooks delete", "webhooks rotate-secret", "webhooks test",
              "topics ensure", "publish")
    by_name = dict(commands())
    for command in tables:
        options = {o for a in by_name[f"akece-webhooks {command}"]._actions for o in a.option_strings}
        assert "--json" in options, command


# --- global options --------------------------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.mark.parametrize("argv", [
    ["--bootstrap-server", "a.example:9092", "--topic-prefix", "staging", "dlq", "list"],
    ["dlq", "list", "--bootstrap-server", "a.example:9092", "--topic-prefix", "staging"],
    ["--topic-prefix", "before", "dlq", "list", "--bootstrap-server", "a.example:9092", "--topic-prefix", "staging"],
    ["--bootstrap-server", "a.example:9092", "webhooks", "get", "7", "--topic-prefix", "staging"],
    ["--bootstrap-server", "a.example:9092", "run", "--role", "router", "--topic-prefix", "staging"],
])
def test_global_options_before_or_after_the_command_override_the_environment(
        clean_env: pytest.MonkeyPatch, argv: list[str]) -> None:
    clean_env.setenv("AKECE_KAFKA_BOOTSTRAP_SERVERS", "env.example:9092")
    clean_env.setenv("AKECE_TOPIC_PREFIX", "from-env")
    clean_env.setenv("AKECE_KAFKA_CLIENT_ID", "kept")  # the rest of the kafka group still comes from the environment
    settings = load_settings(cli.parser().parse_args(argv))
    assert (settings.kafka.bootstrap_servers, settings.topic_prefix) == ("a.example:9092", "staging")
    assert settings.kafka.client_id == "kept"


def test_the_children_of_processes_n_get_the_global_options() -> None:
    args = cli.parser().parse_args(["--topic-prefix", "staging", "deliver", "--processes", "2",
                                    "--bootstrap-server", "a.example:9092", "--env-file", "prod.env"])
    argv = child_argv(args)
    assert argv[argv.index("deliver"):] == ["deliver", "--processes", "1", "--bootstrap-server", "a.example:9092",
                                            "--topic-prefix", "staging", "--env-file", "prod.env"]
    child = cli.parser().parse_args(argv[argv.index("deliver"):])
    assert (child.bootstrap_server, child.topic_prefix, str(child.env_file)) == \
        ("a.example:9092", "staging", "prod.env")


def test_without_global_options_the_environment_decides(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AKECE_TOPIC_PREFIX", "from-env")
    args = cli.parser().parse_args(["status"])
    assert all(getattr(args, name) is None for name in GLOBAL_OPTIONS)
    assert load_settings(args).topic_prefix == "from-env"


def test_env_file_gives_settings_the_environment_and_options_win(clean_env: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    env_file = tmp_path / "prod.env"
    env_file.write_text("# production\nAKECE_KAFKA_BOOTSTRAP_SERVERS=file.example:9092\nAKECE_TOPIC_PREFIX=from-file\n"
                        "AKECE_KAFKA_CLIENT_ID=file-client\nAKECE_LOG_LEVEL=warning\nOTHER_TOOL_SETTING=1\n")
    from_file = load_settings(cli.parser().parse_args(["--env-file", str(env_file), "status"]))
    assert (from_file.kafka.bootstrap_servers, from_file.topic_prefix, from_file.kafka.client_id,
            from_file.log_level) == ("file.example:9092", "from-file", "file-client", "warning")
    assert from_file == Settings(_env_file=env_file)  # exactly as pydantic-settings reads it

    clean_env.setenv("AKECE_TOPIC_PREFIX", "from-env")
    mixed = load_settings(cli.parser().parse_args(["status", "--env-file", str(env_file),
                                                   "--bootstrap-server", "flag.example:9092"]))
    assert (mixed.kafka.bootstrap_servers, mixed.topic_prefix, mixed.kafka.client_id) == \
        ("flag.example:9092", "from-env", "file-client")


@pytest.mark.parametrize("argv", [["dlq", "list"], ["kafka", "status"], ["publish", "--dry-run"],
                                  ["alerts", "render"], ["run"]])
def test_a_missing_env_file_is_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    assert cli.main(["--env-file", str(missing), *argv]) == Exit.USAGE
    captured = capsys.readouterr()
    assert captured.err == f"akece-webhooks: --env-file {missing}: No such file or directory\n"
    assert captured.out == ""


def test_an_env_file_that_is_a_directory_is_refused_too(tmp_path: Path) -> None:
    done = run(["status", "--env-file", str(tmp_path)], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert done.returncode == Exit.USAGE
    assert done.stderr == f"akece-webhooks: --env-file {tmp_path}: Is a directory\n" and done.stdout == ""


# --- a broker that is down: one line -----------------------------------------------------------------
ONE_SHOT = [
    ["topics", "ensure"], ["webhooks", "list"], ["webhooks", "get", "7"], ["webhooks", "test", "7"],
    ["webhooks", "create", "--account", "1", "--url", "https://hooks.example.com/a"], ["webhooks", "delete", "7"],
    ["dlq", "list"], ["dlq", "show", "00000000-0000-0000-0000-000000000000"], ["dlq", "replay", "--yes"],
    ["recover", "--webhook", "7", "--since", "1h", "--yes"], ["status"], ["publish", "--example", "message_created"],
]


async def test_one_shot_commands_with_the_broker_down_print_one_line(settings: Settings) -> None:
    """The environment names the real broker; ``--bootstrap-server`` (before or after the command) a closed port:
    each command fails on the closed port with its one line, and no aiokafka warning or traceback before it."""
    closed = f"127.0.0.1:{free_port()}"
    env = cli_env(settings) | {"AKECE_LOG_FORMAT": "console"}
    gate = asyncio.Semaphore(4)

    async def one(index: int, command: list[str]) -> tuple[list[str], int, str, str]:
        argv = ["--bootstrap-server", closed, *command] if index % 2 else [*command, "--bootstrap-server", closed]
        async with gate:
            done = await asyncio.to_thread(run, argv, env)
        return argv, done.returncode, done.stdout, done.stderr

    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(ONE_SHOT)))
    for argv, code, out, err in results:
        assert code == Exit.FAILED, (argv, code, err)  # one code for every command: it ran, Kafka failed it
        assert err.count("\n") == 1 and err.endswith("\n"), (argv, err)
        assert f"cannot reach Kafka at {closed}" in err, (argv, err)
        assert out == "", (argv, out)


# --- colours -----------------------------------------------------------------------------------------
def colour_codes(text: str) -> list[str]:
    """The SGR parameters that set a colour (30-49, 90-107); bold and resets are not colours."""
    return [code for group in re.findall(r"\x1b\[([\d;]*)m", text) for code in group.split(";")
            if code and (30 <= int(code) <= 49 or 90 <= int(code) <= 107)]


def on_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run with stdout on a pseudo-terminal; what it printed there."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-m", "services", *args], stdout=follower,
                                   stderr=subprocess.PIPE, env=env)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    finally:
        os.close(leader)
    return b"".join(chunks).decode()


async def test_colours_only_on_a_terminal_and_never_with_no_color(settings: Settings, topics: Topics) -> None:
    env = cli_env(settings) | {"COLUMNS": "250", "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8"}
    created = await asyncio.to_thread(on_terminal, ["webhooks", "create", "--account", "3", "--url",
                                                    "http://127.0.0.1:9/colour"], env)
    assert "http://127.0.0.1:9/colour" in created and "\x1b[32myes" in created  # enabled: green
    assert colour_codes(created)

    plain = await asyncio.to_thread(on_terminal, ["webhooks", "list"], env | {"NO_COLOR": "1"})
    assert "http://127.0.0.1:9/colour" in plain and colour_codes(plain) == []

    piped = await asyncio.to_thread(run, ["webhooks", "list"], env)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout
    header, row = piped.stdout.splitlines()
    assert header.split() == ["ID", "ACCOUNT_ID", "ENABLED", "NAME", "URL", "SUBSCRIPTIONS"]
    assert row.split()[1:5] == ["3", "yes", "-", "http://127.0.0.1:9/colour"]
    as_json = await asyncio.to_thread(run, ["webhooks", "list", "--json"], env)
    [hook] = orjson.loads(as_json.stdout)
    assert (hook["account_id"], hook["url"], hook["enabled"]) == (3, "http://127.0.0.1:9/colour", True)


def test_kafka_start_takes_its_port_from_a_local_bootstrap_server(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int | None] = []

    def start(args: argparse.Namespace) -> int:
        started.append(args.port)
        return 0
    monkeypatch.setattr(devtools_cli, "kafka_cli", start)
    assert cli.main(["--bootstrap-server", "127.0.0.1:19092", "kafka", "start"]) == 0
    assert cli.main(["kafka", "start", "--bootstrap-server", "kafka.example:9092"]) == 0  # not this machine
    assert cli.main(["--bootstrap-server", "127.0.0.1:19092", "kafka", "start", "--port", "19093"]) == 0
    assert started == [19092, None, 19093]


# --- --json where a table is printed ---------------------------------------------------------------
async def test_topics_ensure_and_publish_print_the_same_facts_as_json(settings: Settings) -> None:
    env = cli_env(settings)
    made = await asyncio.to_thread(run, ["topics", "ensure", "--json"], env)
    assert made.returncode == 0, made.stderr
    rows = orjson.loads(made.stdout)
    expected = {spec.name for spec in topic_specs(settings)}
    assert {r["topic"] for r in rows} == expected and {r["result"] for r in rows} == {"created"}
    events = next(r for r in rows if r["topic"] == Topics.from_settings(settings).events)
    assert (events["partitions"], events["replication_factor"], events["cleanup_policy"]) == (3, 1, "delete")

    again = await asyncio.to_thread(run, ["topics", "ensure"], env)
    header, *lines = again.stdout.splitlines()
    assert header.split()[:4] == ["RESULT", "TOPIC", "PARTITIONS", "REPLICAS"]
    assert {line.split()[1] for line in lines} == expected and {line.split()[0] for line in lines} == {"exists"}

    dry = await asyncio.to_thread(run, ["publish", "--example", "message_created", "--account", "5", "--dry-run",
                                        "--json"], env)
    [valid] = orjson.loads(dry.stdout)
    assert (valid["event"], valid["account_id"], valid["key"]) == ("message_created", "5", "5:1")
    sent = await asyncio.to_thread(run, ["publish", "--example", "message_created", "--account", "5", "--json"], env)
    assert sent.returncode == 0, sent.stderr
    [published] = orjson.loads(sent.stdout)
    assert (published["event"], published["account_id"], published["offset"]) == ("message_created", "5", 0)
    assert 0 <= published["partition"] < 3 and len(published["id"]) == 36
