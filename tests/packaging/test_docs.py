"""The docs map lists every page, and docs/getting-started.md works exactly as written.

The getting-started test runs the page's snippets in a fresh directory, in order: each Python
block is saved under the file name of its first line (`# story.py`), and each shell command is run
the way the page says, on a free port instead of 8000. A command this test does not know how to
run fails it, so a snippet cannot be added without being tested. The install commands are what
`test_wheel.py` does with the built wheel.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
PAGE = DOCS / "getting-started.md"
BIN = Path(sys.executable).parent  # this venv's scripts: python, uvicorn, tether
INSTALL = (  # the page's install commands: what test_wheel.py's `server_venv` fixture does
    "python3 -m venv .venv && . .venv/bin/activate",
    "pip install 'tether[server]'",
)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a Markdown page, as (language, code)."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def test_index_lists_every_page_once_with_one_line() -> None:
    index = (DOCS / "index.md").read_text()
    listed = re.findall(r"^- \[([\w.-]+)\]\(\1\) — \S.*$", index, re.MULTILINE)
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "index.md")
    assert sorted(listed) == pages
    assert len(set(listed)) == len(listed)


def test_every_relative_link_in_the_docs_points_at_a_page() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([\w.-]+\.md)\)", page.read_text()):
            assert (DOCS / target).is_file(), f"{page.name} links to {target}"


# ---------------------------------------------------------------- getting started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Page:
    """Runs the page's shell commands in `home`, as a reader would, on `port`."""

    def __init__(self, home: Path, port: int, stack: ExitStack) -> None:
        self.home, self.port, self.stack = home, port, stack
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TETHER_DB")}
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["PYTHONUNBUFFERED"] = "1"
        self.server: subprocess.Popen[str] | None = None  # the server started last
        self.streaming: subprocess.Popen[str] | None = None  # a `curl -N` still reading
        self.outputs: list[str] = []  # each finished command's stdout, in order

    def argv(self, command: str) -> list[str]:
        args = shlex.split(command.replace("8000", str(self.port)))
        if args[:2] == ["tether", "serve"] and "--port" not in args:
            args += ["--port", str(self.port)]
        return args

    def run(self, command: str) -> None:
        if command in INSTALL:
            return  # test_wheel.py does this with the built wheel, in a fresh venv
        args = self.argv(command)
        if args[0] in ("uvicorn", "tether"):
            self.serve(args, ready="Uvicorn running on" if args[0] == "uvicorn" else "ready")
        elif args[:2] == ["curl", "-N"]:
            self.streaming = self.popen(args, stderr=subprocess.DEVNULL)  # curl's progress meter
            self.read_until(self.streaming, '"type": "message_delta"')
        elif args[0] in ("python", "curl"):
            done = subprocess.run(
                args, cwd=self.home, env=self.env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, f"{command!r}: {done.stdout}{done.stderr}"
            self.outputs.append(done.stdout)
        else:
            pytest.fail(f"the page runs {command!r}; teach this test to run it")

    def popen(self, args: list[str], stderr: int = subprocess.STDOUT) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            args,
            cwd=self.home,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self.stack.callback(stop_process, process)
        return process

    def serve(self, args: list[str], ready: str) -> None:
        if self.server is not None:
            stop_process(self.server)  # the reader's Ctrl+C: the next server takes the port
        self.server = self.popen(args)
        self.read_until(self.server, ready)
        health = httpx.get(
            f"http://127.0.0.1:{self.port}/healthz"
            if args[0] == "tether"
            else f"http://127.0.0.1:{self.port}/openapi.json",
            timeout=30,
        )
        assert health.status_code == 200, health.text

    @staticmethod
    def read_until(process: subprocess.Popen[str], marker: str) -> str:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if marker in line:
                return "".join(seen)
        pytest.fail(f"{process.args!r} ended before {marker!r}:\n{''.join(seen)}")

    def finish_streaming(self) -> str:
        assert self.streaming is not None
        rest, _ = self.streaming.communicate(timeout=30)
        assert self.streaming.returncode == 0
        self.streaming = None
        return rest


def stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@contextmanager
def page_runner(home: Path) -> Iterator[Page]:
    with ExitStack() as stack:
        yield Page(home, free_port(), stack)


def test_getting_started_runs_as_written(tmp_path: Path) -> None:
    text = PAGE.read_text()
    found = blocks(text)
    files = {
        code.splitlines()[0].removeprefix("# "): code for lang, code in found if lang == "python"
    }
    assert set(files) == {"story.py", "stop.py", "api.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    commands = [
        line.split("  #")[0].strip()
        for lang, code in found
        if lang == "bash"
        for line in code.splitlines()
        if line.strip()
    ]
    printed = [code for lang, code in found if lang == "text"]
    assert len(printed) == 1  # what `python stop.py` prints

    with page_runner(tmp_path) as page:
        for command in commands:
            page.run(command)
            if command.startswith("curl -X POST") and "/stop/" in command:
                assert json.loads(page.outputs[-1]) == {"stopped": True}
                streamed = page.finish_streaming()
                finished = json.loads(streamed.strip().splitlines()[-1].removeprefix("data: "))
                assert (finished["type"], finished["status"]) == ("run_finished", "cancelled")

        stop_py, stop_json, messages_json = page.outputs
        check_stop_output(stop_py, printed[0], story_words(tmp_path))
        assert json.loads(stop_json) == {"stopped": True}
        history = json.loads(messages_json)
        assert [(m["role"], m["status"]) for m in history] == [
            ("user", "complete"),
            ("assistant", "stopped"),
        ]
        story = story_words(tmp_path)
        said = history[1]["content"].split()
        assert 0 < len(said) < len(story) and said == story[: len(said)]


def story_words(home: Path) -> list[str]:
    """The words of `STORY` in the page's story.py."""
    story = re.search(r"STORY = \((.*?)\)\.split\(\)", (home / "story.py").read_text(), re.DOTALL)
    assert story is not None
    return "".join(re.findall(r'"([^"]*)"', story.group(1))).split()


def check_stop_output(actual: str, documented: str, story: list[str]) -> None:
    """`python stop.py` printed what the page shows: the same lines, roles and statuses.

    The words before each stop are exact on a quiet machine. On a busy one a word may come out
    between pressing Stop and the stop taking effect, so each answer is checked as "at least the
    page's words", and the two answers together as the story's first words.
    """
    got, want = actual.splitlines(), documented.splitlines()
    assert len(got) == len(want) == 6, actual
    assert all(line.endswith(" [cancelled]") for line in got[:2] + want[:2]), actual
    first, second = (line.removesuffix(" [cancelled]").split() for line in got[:2])
    page_first, page_second = (line.removesuffix(" [cancelled]").split() for line in want[:2])
    assert page_first + page_second == story[:7]  # the page's own output is right
    assert first + second == story[: len(first) + len(second)]
    assert len(first) >= 3 and len(second) >= 4
    table = [line.split(maxsplit=2) for line in got[2:]]
    assert [row[:2] for row in table] == [line.split(maxsplit=2)[:2] for line in want[2:]]
    assert [row[2].split() for row in table] == [
        ["Tell", "me", "a", "story"],
        first,
        ["Go", "on"],
        second,
    ]
