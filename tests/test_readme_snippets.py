"""The README's snippets work as a newcomer copies them, and every relative link of the docs leads somewhere.

A fenced block in ``README.md`` is preceded by a marker saying how it is checked:

- ``<!-- tested: NAME -->``: a shell snippet run here with bash (``set -euo pipefail``), as a reader runs it
  in a second terminal while ``make run`` runs: against a real ``akece-webhooks demo`` process on the real
  broker, with the demo's default addresses (API 8080, receiver 8090, metrics 9100) replaced by the free
  ports this demo got, and its own topic prefix. ``RUNNERS`` maps each NAME to what the reader must see.
- ``<!-- output: make-run -->``: the expected output of ``make run``; every line shown must be printed by the
  demo (ids, times and ports normalised; ``...`` leaves lines or parts of a line out).
- ``<!-- copy: PATH -->`` / ``<!-- excerpt: PATH -->``: the whole file, or a run of its lines, of an example
  that ``tests/test_examples_producers.py`` or ``tests/test_examples_receivers.py`` runs (``EXAMPLE_TESTS``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.devtools.ports import free_port
from tests import test_examples_producers, test_examples_receivers
from tests.conftest import make_settings
from tests.test_alert_rules import github_anchor

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, ROOT / "examples" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKED = re.compile(r"^<!-- (tested|output|copy|excerpt): (\S+) -->\n```(\w*)\n(.*?)\n```$", re.M | re.S)
FENCE = re.compile(r"^```.*?^```$", re.M | re.S)
CODE_PATH = re.compile(r"`((?:bench|deploy|docs|examples|schemas|services|tests)/[^`\s:]*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<(https?://[^>]+)>")
ACCOUNT = re.compile(r"\[account\] delivered=(\d+) retried=(\d+) dead-lettered=(\d+)")
DEMO_EVENTS = 7
DEFAULT_PORTS = {"api": 8080, "receiver": 8090, "metrics": 9100}
# The sections a reader copies from, each with at least one checked block.
TASK_SECTIONS = ["Quick start", "Publish an event", "Register a webhook", "Verify a delivery", "Replay what failed",
                 "Deploy"]
# Example file -> (its test module's table, the entry that runs it).
EXAMPLE_TESTS: dict[str, tuple[Mapping[str, object], str]] = {
    "examples/producers/go/main.go": (test_examples_producers.PRODUCERS, "go-franz-go"),
    "examples/producers/java/PublishMessageCreated.java": (test_examples_producers.PRODUCERS, "java-kafka-clients"),
    "examples/receivers/node/standard-webhooks.js": (test_examples_receivers.RECEIVERS, "node-standardwebhooks"),
}
REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_accountid")


@dataclass(frozen=True)
class Block:
    kind: str
    name: str
    language: str
    text: str


def blocks(kind: str | None = None, text: str | None = None) -> list[Block]:
    found = [Block(*m.groups()) for m in MARKED.finditer(README.read_text() if text is None else text)]
    return [b for b in found if kind is None or b.kind == kind]


def block(kind: str, name: str) -> Block:
    (found,) = [b for b in blocks(kind) if b.name == name]
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """A bounded wait on a condition (a file another process writes), not a sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


# -- links ---------------------------------------------------------------------------------------------------


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (outside code blocks; repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", markdown.read_text()).splitlines():
        if line.startswith("#"):
            anchor = github_anchor(line.lstrip("#"))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def relative_links(markdown: Path) -> list[str]:
    text = FENCE.sub("", markdown.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # a link shown as code is not a link
    targets = [m.group(1) for m in LINK.finditer(text) if m.group(1)]
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("markdown", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(markdown: Path) -> None:
    broken = []
    for link in relative_links(markdown):
        path, _, anchor = link.partition("#")
        target = (markdown.parent / path).resolve() if path else markdown
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{markdown.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("markdown", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_shown_as_code_exists(markdown: Path) -> None:
    """`docs/runbook.md`, `tests/test_x.py` in prose name files too (patterns such as `docs/*.md` aside)."""
    text = FENCE.sub("", markdown.read_text())
    paths = [p.rstrip(".,") for p in CODE_PATH.findall(text) if not re.search(r"[*{<]", p)]
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"{markdown.relative_to(ROOT)} names files that do not exist: {missing}"


def test_the_link_check_sees_links_and_headings() -> None:
    """The checks above would notice: the README links the contract and the runbook, and anchors resolve."""
    links = relative_links(README)
    assert "docs/contract.md" in links and "docs/runbook.md" in links
    assert any(link.startswith("#") for link in links)
    assert {"quick-start", "configuration", "command-line"} <= anchors(README)


# -- copies of tested examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shown", blocks("copy") + blocks("excerpt"), ids=lambda b: f"{b.kind}:{b.name}")
def test_shown_example_is_a_copy_of_a_tested_example(shown: Block) -> None:
    table, entry = EXAMPLE_TESTS[shown.name]
    assert entry in table, f"{shown.name}: no test runs it"
    source = (ROOT / shown.name).read_text().rstrip("\n")
    if shown.kind == "copy":
        assert shown.text == source, f"README's copy of {shown.name} differs from the file"
        return
    lines, wanted = source.splitlines(), shown.text.splitlines()
    assert len(wanted) >= 5
    starts = [i for i in range(len(lines) - len(wanted) + 1) if lines[i:i + len(wanted)] == wanted]
    assert starts, f"README's excerpt of {shown.name} is not a run of the file's lines"
    if "producers" in shown.name:  # the essential lines: every required header and the key
        for header in REQUIRED_HEADERS:
            assert f'"{header}"' in shown.text
        assert 'accountID + ":" + conversation' in shown.text or 'accountId + ":" + conversation' in shown.text


def test_each_section_a_reader_copies_from_has_a_checked_block() -> None:
    text = README.read_text()
    for title in TASK_SECTIONS:
        body = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
        assert blocks(text=body), f"section {title!r} has no tested or copied block"


def test_every_tested_snippet_has_a_runner() -> None:
    assert {b.name for b in blocks("tested")} == set(RUNNERS)


# -- the snippets, run against `akece-webhooks demo` -------------------------------------------------------------


class Demo:
    """``akece-webhooks demo`` (what ``make run`` runs) as a process, its output in a file."""

    def __init__(self, bootstrap: str, prefix: str, log: Path) -> None:
        self.bootstrap, self.prefix, self.log = bootstrap, prefix, log
        self.ports = {name: free_port() for name in DEFAULT_PORTS}
        env = {**self.clean_env(), "AKECE_API_HOST": "127.0.0.1", "AKECE_API_PORT": str(self.ports["api"]),
               "AKECE_METRICS_HOST": "127.0.0.1", "AKECE_METRICS_PORT": str(self.ports["metrics"]),
               "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services", "demo", "--receiver-port", str(self.ports["receiver"])],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def clean_env(self) -> dict[str, str]:
        """A reader's shell: no AKECE_ settings but the broker and this demo's topic prefix."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AKECE_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return {**env, "AKECE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "AKECE_TOPIC_PREFIX": self.prefix}

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_dead_lettered(self) -> None:
        def done() -> bool:
            assert self.process.poll() is None, f"the demo exited:\n{self.output()[-3000:]}"
            return any(int(m[0]) >= DEMO_EVENTS and int(m[2]) >= DEMO_EVENTS for m in ACCOUNT.findall(self.output()))
        wait_for(done, 120, "the demo's events delivered and dead-lettered")

    def local(self, snippet: str) -> str:
        """The snippet with the demo's default addresses replaced by this demo's ports."""
        for name, default in DEFAULT_PORTS.items():
            snippet = snippet.replace(f"127.0.0.1:{default}", f"127.0.0.1:{self.ports[name]}")
        return snippet

    def stop(self) -> str:
        """Ctrl-C, as the reader stops it; the whole output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            finally:
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait()
        assert self.process.returncode == 0, f"exit {self.process.returncode}:\n{self.output()[-3000:]}"
        return self.output()


@pytest.fixture(scope="module")
def demo(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = Demo(kafka_bootstrap, make_settings(kafka_bootstrap).topic_prefix,
                   tmp_path_factory.mktemp("demo") / "demo.log")
    try:
        running.wait_until_dead_lettered()
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def run_snippet(demo: Demo, name: str, cwd: Path) -> str:
    """Run a tested snippet as the reader would; fail with its output unless every command succeeds."""
    (cwd / "examples").symlink_to(ROOT / "examples")  # snippets name files from the repository's root
    script = demo.local(block("tested", name).text)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=demo.clean_env(),
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"snippet {name!r} exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def delivered_to_crm(demo: Demo, event: str) -> int:
    return len(re.findall(rf"\] 200 /hooks/crm +{event} ", demo.output()))


def check_try_next(demo: Demo, cwd: Path) -> None:
    out = run_snippet(demo, "try-next", cwd)
    assert '"name": "Demo CRM"' in out and '"name": "Demo broken endpoint"' in out
    assert '"secret": "whsec_…' in out, "the list shows the secret masked"
    assert re.search(r"^\S+Z +1 +\d+ +\w+ +exhausted +\d", out, re.M), out
    assert "Dead letters" in out and "Open circuits" in out


def check_publish(demo: Demo, cwd: Path) -> None:
    before = delivered_to_crm(demo, "message_created")
    out = run_snippet(demo, "publish", cwd)
    assert len(re.findall(r"^published message_created +id=", out, re.M)) == 2, out
    wait_for(lambda: delivered_to_crm(demo, "message_created") >= before + 2, 60,
             "both published events delivered to the demo's healthy webhook")


def check_register(demo: Demo, cwd: Path) -> None:
    out = run_snippet(demo, "register", cwd)
    assert '"name": "My CRM"' in out and '"subscriptions": [\n    "message_created",\n    "conversation_created"' in out
    assert re.search(r'"secret": "whsec_[A-Za-z0-9+/=]{20,}"', out), "the secret is shown in full, once"
    assert re.search(r"^status +HTTP 200$", out, re.M), out
    assert re.search(r"^response +\{\"ok\": true\}$", out, re.M), out
    assert re.search(r"^name +My CRM$", out, re.M) and re.search(r"^secret +whsec_…", out, re.M), out
    assert re.search(r"\] 200 /hooks/crm +ping ", demo.output()), "the demo's receiver got no ping"


def check_replay(demo: Demo, cwd: Path) -> None:
    out = run_snippet(demo, "replay", cwd)
    assert re.search(r"^\d+ matching dead letters", out, re.M), out
    assert "dry run: nothing sent" in out
    assert re.search(r"^done: \d+ re-enqueued", out, re.M), out
    assert "dead letter of delivery " in out and "\nbody:\n" in out, out  # dlq show: the whole story


def check_deploy(demo: Demo, cwd: Path) -> None:
    """``topics ensure`` on its own prefix, then each ``run --role`` until ready, then SIGTERM: exit 0."""
    env = {**demo.clean_env(), "AKECE_TOPIC_PREFIX": demo.prefix + "d", "AKECE_API_HOST": "127.0.0.1",
           "AKECE_METRICS_HOST": "127.0.0.1"}
    commands = [line.split("#", 1)[0].strip() for line in block("tested", "deploy").text.splitlines()]
    once = [c for c in commands if c and "run --role" not in c]
    roles = [c for c in commands if "run --role" in c]
    assert once == ["akece-webhooks topics ensure"] and len(roles) == 3
    for command in once:
        done = subprocess.run(command.split(), cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    running = []
    for command in roles:
        metrics = free_port()
        log = (cwd / f"{command.split()[-1]}.log").open("wb")
        process = subprocess.Popen(command.split(), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={
            **env, "AKECE_METRICS_PORT": str(metrics), "AKECE_API_PORT": str(free_port())})
        running.append((command, process, metrics, log))
    try:
        for command, process, metrics, _ in running:
            wait_for(ready_or_exited(process, metrics), 120, f"{command} ready")
            assert process.poll() is None, f"{command} exited {process.returncode}"
        for _, process, _, _ in running:
            process.send_signal(signal.SIGTERM)
        for command, process, _, log in running:
            log.close()
            assert process.wait(60) == 0, f"{command} did not drain and exit 0"
    finally:
        for _, process, _, _ in running:
            if process.poll() is None:
                process.kill()
                process.wait()


def ready_or_exited(process: subprocess.Popen[bytes], metrics_port: int) -> Callable[[], bool]:
    """True once the process's /readyz answers 200, or once it exited."""
    def check() -> bool:
        if process.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False
    return check


RUNNERS: dict[str, Callable[[Demo, Path], None]] = {
    "try-next": check_try_next,
    "publish": check_publish,
    "register": check_register,
    "replay": check_replay,
    "deploy": check_deploy,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNNERS))
def test_tested_snippet_does_what_the_readme_says(name: str, demo: Demo, tmp_path: Path) -> None:
    RUNNERS[name](demo, tmp_path)


# -- the expected output of make run (last: it stops the demo) ------------------------------------------------


def normalised(line: str) -> str:
    line = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", line)
    line = re.sub(r"\b\d\d:\d\d:\d\d\b", "<hh:mm:ss>", line)
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", line)
    line = re.sub(r"\b(delivery=|event id )[0-9a-f]{8}\b", r"\1<id>", line)
    line = re.sub(r"\b\d{10,}\b", "<webhook>", line)
    return " ".join(line.split())


def shown_lines() -> list[str]:
    """The README's expected output of make run, minus what a test on a shared broker cannot print."""
    demo_source = (ROOT / "services" / "demo" / "cli.py").read_text()
    lines = []
    for line in block("output", "make-run").text.splitlines():
        if line.strip() in ("", "...", "^C"):
            continue
        if "local Kafka broker" in line:  # printed only when it starts its own broker on 9092
            assert line.strip() in demo_source, f"the demo prints no {line!r}"
            continue
        lines.append(line)
    return lines


@pytest.mark.slow
def test_make_run_prints_the_output_the_readme_shows(demo: Demo) -> None:
    output = demo.stop()
    for name, default in DEFAULT_PORTS.items():
        output = output.replace(f"127.0.0.1:{demo.ports[name]}", f"127.0.0.1:{default}")
    printed = [normalised(line) for line in output.splitlines()]
    missing = []
    for line in shown_lines():
        pattern = ".*".join(re.escape(part) for part in normalised(line).split(" ... "))
        if not any(re.fullmatch(pattern, candidate) for candidate in printed):
            missing.append(line)
    assert not missing, "README lines make run did not print:\n" + "\n".join(missing) + "\n--- output:\n" + output
    assert printed[-1] == "pipeline stopped"
