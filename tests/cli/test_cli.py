"""The `tether` CLI in real subprocesses: chat with Ctrl+C (SIGINT), serve, and target loading.

Each step waits for the output it needs (a sync point, with a watchdog timeout), never for time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tether import App
from tether.cli import load_target
from tether.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
WATCHDOG = 30.0


class Proc:
    """A `tether ...` subprocess whose output the test can wait for."""

    def __init__(self, *args: str, cwd: Path = ROOT) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", "from tether.cli import main; main()", *args],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )
        self.output = ""
        self._seen = 0  # `expect` consumes output up to here
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        while chunk := self.popen.stdout.read1(4096):  # type: ignore[attr-defined]
            with self._changed:
                self.output += chunk.decode("utf-8", "replace")
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def expect(self, text: str) -> None:
        """Wait until `text` appears in the output after the last expected text."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: text in self.output[self._seen :] or self.popen.poll() is not None,
                timeout=WATCHDOG,
            )
            at = self.output.find(text, self._seen)
            assert found, f"watchdog: no {text!r} in output:\n{self.output}"
            assert at >= 0, f"exited without {text!r}; output:\n{self.output}"
            self._seen = at + len(text)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def interrupt(self) -> None:
        self.popen.send_signal(signal.SIGINT)

    def wait(self) -> int:
        code = self.popen.wait(timeout=WATCHDOG)
        self._reader.join(timeout=WATCHDOG)
        return code

    def close(self) -> None:
        """Kill the process if it still runs, and close its pipes."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._reader.join(timeout=WATCHDOG)
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ctrl_c_during_an_answer_stops_it_and_the_chat_goes_on(procs: list[Proc]) -> None:
    chat = Proc("chat", "tests.cli._apps:chat")
    procs.append(chat)
    chat.expect("you › ")
    chat.send("hi")
    chat.expect("tether › Hello")  # the answer is streaming, blocked mid-way
    chat.interrupt()
    chat.expect("■ stopped")
    chat.expect("you › ")
    chat.send("go on")
    chat.expect("You said: go on. Before that I said: Hello (stopped).")
    chat.expect("you › ")
    assert chat.popen.stdin is not None
    chat.popen.stdin.close()  # Ctrl+D
    assert chat.wait() == 0
    assert "Traceback" not in chat.output
    assert "KeyboardInterrupt" not in chat.output


def test_ctrl_c_twice_at_the_prompt_quits(procs: list[Proc]) -> None:
    chat = Proc("chat", "tests.cli._apps:chat")
    procs.append(chat)
    chat.expect("you › ")
    chat.interrupt()
    chat.expect("press Ctrl+C again")
    chat.expect("you › ")
    chat.interrupt()
    chat.expect("bye")
    assert chat.wait() == 0
    assert "Traceback" not in chat.output


def test_serve_serves_a_dict_of_apps_and_stops_on_ctrl_c(procs: list[Proc], tmp_path: Path) -> None:
    port = free_port()
    keys = tmp_path / "keys.txt"
    keys.write_text("# test keys\nkey-alice-123 alice\n")
    server = Proc("serve", "tests.cli._apps:apps", "--port", str(port), "--auth-file", str(keys))
    procs.append(server)
    server.expect("ready")
    url = f"http://127.0.0.1:{port}"
    info = httpx.get(f"{url}/info", timeout=WATCHDOG).json()
    assert info["apps"] == ["first", "second"]
    assert info["auth"] is True
    assert httpx.get(f"{url}/threads", timeout=WATCHDOG).status_code == 401
    ok = httpx.get(f"{url}/threads", headers={"X-API-Key": "key-alice-123"}, timeout=WATCHDOG)
    assert ok.status_code == 200
    assert httpx.get(url, timeout=WATCHDOG).headers["content-type"].startswith("text/html")
    server.interrupt()
    assert server.wait() == 0


def test_serve_explains_a_busy_port(procs: list[Proc]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = Proc("serve", "tests.cli._apps:chat", "--port", str(port))
        procs.append(server)
        assert server.wait() == 1
    assert "try --port" in server.output


def test_load_target_accepts_apps_dicts_factories_and_files(tmp_path: Path) -> None:
    assert isinstance(load_target("tests.cli._apps:chat"), App)
    apps = load_target("tests.cli._apps:apps")
    assert isinstance(apps, dict)
    assert sorted(apps) == ["first", "second"]
    script = tmp_path / "my_agent.py"
    script.write_text(
        "from tether import Agent, InMemoryCheckpointer\n"
        "from tether.testing import ScriptedModel\n"
        "agent = Agent(ScriptedModel(default_reply='hi'), checkpointer=InMemoryCheckpointer())\n"
    )
    assert isinstance(load_target(f"{script}:agent"), App)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_colon", "module:attr"),
        ("tests.cli._nope:app", "cannot import"),
        ("tests.cli._apps:missing", "no attribute"),
        ("tests.cli._apps:not_an_app", "not a tether App"),
        ("/nonexistent/file.py:app", "does not exist"),
    ],
)
def test_load_target_names_what_is_wrong(spec: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        load_target(spec)


@pytest.mark.llm
def test_demo_serves_the_local_model_and_answers(procs: list[Proc], tmp_path: Path) -> None:
    port = free_port()
    demo = Proc("demo", "--port", str(port), "--db", str(tmp_path / "demo.db"))
    procs.append(demo)
    demo.expect("model ready")
    demo.expect("ready")
    url = f"http://127.0.0.1:{port}"
    body = {"input": {"messages": [{"role": "user", "content": "Say hello."}]}}
    r = httpx.post(f"{url}/threads/d1/runs/wait", json=body, timeout=120)
    assert r.json()["run"]["status"] == "completed"
    assert r.json()["messages"][-1]["role"] == "assistant"
    assert r.json()["messages"][-1]["content"].strip()
    demo.interrupt()
    assert demo.wait() == 0
