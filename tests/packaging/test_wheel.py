"""The wheel, tested as users get it: built, checked, installed into fresh venvs, then used.

`python -m build` makes the sdist and, from it, the wheel (so the sdist is complete too);
`twine check --strict` checks their metadata. The wheel goes into two fresh venvs, one with the
core only and one with the `server` extra, and each is used the way a user would: the `tether`
command, imports that need a missing extra, a graph run with a stop, `tether serve` answering
`/healthz` and serving the UI assets, and `mypy --strict` on a user program against the installed
package. pip's cache keeps the venvs quick; the `local` extra (a llama.cpp build) is never
installed here.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import tether

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(300)]

ROOT = Path(__file__).parents[2]
PROGRAMS = Path(__file__).parent / "programs"
PIP_TIMEOUT = 240  # seconds for one pip or build command (a cold pip cache downloads)


def run(
    args: Sequence[str | Path], *, cwd: Path | None = None, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH", "VIRTUAL_ENV")
    }
    env["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(f"{args!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    home: Path  # an empty working directory (the user's project)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def tether(self) -> Path:
        return self.root / "bin" / "tether"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend (hatchling, pinned in [build-system]) comes from the dev
    # venv rather than a fresh build venv each run; what is tested is the wheel it makes.
    run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT],
        timeout=PIP_TIMEOUT,
    )
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return Dist(wheel=wheels[0], sdist=sdists[0])


def make_venv(base: Path, requirement: str) -> Venv:
    root, home = base / "venv", base / "home"
    home.mkdir()
    # No pip inside: this venv's pip installs into it (`--python`), which skips ensurepip.
    venv.EnvBuilder(with_pip=False, clear=True).create(root)
    pip = [sys.executable, "-m", "pip", "--python", root / "bin" / "python"]
    run(
        [*pip, "install", "--quiet", "--disable-pip-version-check", requirement],
        timeout=PIP_TIMEOUT,
    )
    return Venv(root=root, home=home)


@pytest.fixture(scope="module")
def core_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return make_venv(tmp_path_factory.mktemp("core"), str(dist.wheel))


@pytest.fixture(scope="module")
def server_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return make_venv(tmp_path_factory.mktemp("server"), f"tether[server] @ {dist.wheel.as_uri()}")


# ---------------------------------------------------------------- the files


def test_twine_accepts_the_wheel_and_sdist_metadata(dist: Dist) -> None:
    done = run([sys.executable, "-m", "twine", "check", "--strict", dist.wheel, dist.sdist])
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_wheel_ships_the_package_with_py_typed_and_the_ui(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(wheel.read(info))
        entry_points = wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    package = {n for n in names if n.startswith("tether/")}
    for path in ROOT.joinpath("src").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert path.relative_to(ROOT / "src").as_posix() in package, path
    assert {"tether/py.typed", "tether/web/index.html", "tether/web/app.js"} <= package
    assert not {n for n in names if n.startswith(("tests/", "bench/", "examples/"))}
    assert metadata["Version"] == tether.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.11"
    assert {"server", "postgres", "redis", "local"} <= set(metadata.get_all("Provides-Extra") or [])
    assert "tether = tether.__main__:main" in entry_points


def test_sdist_holds_the_sources_tests_and_license(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"src/tether/py.typed", "pyproject.toml", "README.md", "LICENSE"} <= names
    assert "tests/packaging/test_wheel.py" in names
    assert not {n for n in names if n.startswith((".venv/", ".git/"))}


# ---------------------------------------------------------------- core only


def test_core_install_reports_its_version(core_venv: Venv) -> None:
    done = run([core_venv.tether, "--version"], cwd=core_venv.home)
    assert done.stdout == f"tether {tether.__version__}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the tether command needs the server extra: pip install 'tether[server]'"),
        (["--help"], "the tether command needs the server extra: pip install 'tether[server]'"),
        (["serve", "app:app"], "tether serve needs the server extra: pip install 'tether[server]'"),
        (
            ["demo"],
            "tether demo needs the server and local extras: pip install 'tether[server,local]'",
        ),
        (
            ["chat", "--thread", "t1"],
            "tether chat needs the server and local extras: pip install 'tether[server,local]'",
        ),
        (["chat", "app:app"], "tether chat needs the server extra: pip install 'tether[server]'"),
    ],
)
def test_cli_without_an_extra_prints_one_line_and_exits_2(
    core_venv: Venv, args: list[str], message: str
) -> None:
    done = run([core_venv.tether, *args], cwd=core_venv.home, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"error: {message}\n")


PYTHON_ENTRY_POINTS = """
from tether import Agent, MissingExtraError
from tether._extras import require
from tether.models import LocalModel

def attempt(what, fn):
    try:
        fn()
    except MissingExtraError as exc:
        assert isinstance(exc, ImportError)
        print(f"{what} -> {exc} {exc.extras}")
    else:
        print(f"{what} -> no error")

attempt("server", lambda: __import__("tether.server"))
attempt("postgres", lambda: __import__("tether.storage.postgres"))
attempt("redis", lambda: require("tether.coordination.redis", "redis"))
attempt("LocalModel", lambda: LocalModel())
attempt("Agent", lambda: Agent("local"))
attempt("mcp", lambda: require("MCP tools", "mcp"))
attempt("otel", lambda: require("tracing", "otel"))
"""


def test_python_entry_points_name_the_missing_extra(core_venv: Venv) -> None:
    done = run([core_venv.python, "-c", PYTHON_ENTRY_POINTS], cwd=core_venv.home)
    assert done.stdout.splitlines() == [
        "server -> tether.server needs the server extra: pip install 'tether[server]' ['server']",
        "postgres -> tether.storage.postgres needs the postgres extra: "
        "pip install 'tether[postgres]' ['postgres']",
        "redis -> tether.coordination.redis needs the redis extra: "
        "pip install 'tether[redis]' ['redis']",
        "LocalModel -> LocalModel needs the local extra: pip install 'tether[local]' ['local']",
        "Agent -> LocalModel needs the local extra: pip install 'tether[local]' ['local']",
        "mcp -> MCP tools needs the mcp extra: pip install 'tether[mcp]' ['mcp']",
        "otel -> tracing needs the otel extra: pip install 'tether[otel]' ['otel']",
    ]


def test_a_failed_import_shows_the_fix_not_the_missing_module(core_venv: Venv) -> None:
    done = run([core_venv.python, "-c", "import tether.server"], cwd=core_venv.home, check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "tether.errors.MissingExtraError: tether.server needs the server extra: "
        "pip install 'tether[server]'"
    )
    assert "ModuleNotFoundError" not in done.stderr  # no chained "during handling" traceback


def test_core_install_runs_a_graph_and_stops_it(core_venv: Venv) -> None:
    done = run([core_venv.python, PROGRAMS / "smoke_graph.py"], cwd=core_venv.home)
    assert done.stdout == "stopped: stopped 'first chunk'\n"
    assert (core_venv.home / ".tether" / "tether.db").is_file()  # the embedded default storage


def mypy(venv_: Venv, program: Path) -> subprocess.CompletedProcess[str]:
    """`mypy --strict` on `program`, resolving imports in the venv (not in this checkout)."""
    return run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--python-executable",
            venv_.python,
            "--cache-dir",
            venv_.root / ".mypy_cache",
            "--config-file",
            os.devnull,
            program.name,
        ],
        cwd=program.parent,
        timeout=180,
        check=False,
    )


def test_a_user_program_type_checks_strictly_against_the_installed_wheel(
    core_venv: Venv,
) -> None:
    good = core_venv.home / "user_program.py"
    shutil.copy(PROGRAMS / "typed_user.py", good)
    done = mypy(core_venv, good)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Success: no issues found in 1 source file"), done.stdout

    # The types are really seen: a wrong annotation of tether's return value is an error.
    wrong = core_venv.home / "wrong_program.py"
    wrong.write_text(
        "from tether import StateGraph\n\n"
        "stopped: str = StateGraph().compile().stop(thread_id='t')\n"
    )
    done = mypy(core_venv, wrong)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(
        r"wrong_program\.py:3: error: Incompatible types in assignment \(expression has type "
        r'"bool", variable has type "str"\)',
        done.stdout,
    ), done.stdout
    assert "py.typed" not in done.stdout


# ---------------------------------------------------------------- with the server extra


def test_server_install_has_the_full_cli(server_venv: Venv) -> None:
    version = run([server_venv.tether, "--version"], cwd=server_venv.home)
    assert version.stdout == f"tether {tether.__version__}\n"
    usage = run([server_venv.tether, "--help"], cwd=server_venv.home)
    assert all(word in usage.stdout for word in ("serve", "demo", "chat", "--version"))
    demo = run([server_venv.tether, "demo"], cwd=server_venv.home, check=False)
    assert (demo.returncode, demo.stderr) == (
        2,
        "error: tether demo needs the local extra: pip install 'tether[local]'\n",
    )


@pytest.fixture
def served(server_venv: Venv) -> Iterator[str]:
    """`tether serve served:app --port 0` in the venv; yields its base URL."""
    shutil.copy(PROGRAMS / "served.py", server_venv.home / "served.py")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONUNBUFFERED"] = "1"
    server = subprocess.Popen(
        [server_venv.tether, "serve", "served:app", "--port", "0"],
        cwd=server_venv.home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    output: list[str] = []
    try:
        # The socket listens before "ready" is printed, so the URL is usable at once.
        for line in server.stdout:
            output.append(line)
            if found := re.search(r"Chat UI\s+(http://\S+)", line):
                break
        else:
            pytest.fail(f"tether serve ended without serving:\n{''.join(output)}")
        yield found.group(1)
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl+C: uvicorn shuts down cleanly
        try:
            rest, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
            raise
    assert server.returncode == 0, "".join(output) + rest
    assert "server stopped" in rest


def test_tether_serve_answers_healthz_and_serves_the_ui(served: str, dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        shipped = {name: wheel.read(f"tether/web/{name}") for name in ("app.js", "app.css")}
    with httpx.Client(base_url=served, timeout=30) as client:
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        index = client.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assets = re.findall(r'(?:src|href)="(ui/[^"]+)"', index.text)
        assert sorted(assets) == ["ui/app.css", "ui/app.js"]
        for asset in assets:
            response = client.get(f"/{asset}")
            assert response.status_code == 200
            assert response.content == shipped[asset.removeprefix("ui/")]
