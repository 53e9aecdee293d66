"""The extras map matches pyproject.toml, and a missing extra is one line naming the fix.

What a user sees without an extra is tested in a fresh venv by `test_wheel.py`; these tests check
the pieces in the development venv, where every extra is installed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tether import MissingExtraError, TetherError
from tether.__main__ import needed_extras
from tether._extras import EXTRAS, install_command, missing_extras, require

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
DECLARED = set(PYPROJECT["project"]["optional-dependencies"]) - {"dev"}


def test_every_declared_extra_has_modules_to_check() -> None:
    assert set(EXTRAS) >= DECLARED


@pytest.mark.parametrize("extra", sorted(DECLARED))
def test_the_modules_of_each_declared_extra_are_installed_with_it(extra: str) -> None:
    assert missing_extras(extra) == []  # the development venv has every extra


def test_a_missing_extra_names_the_pip_command() -> None:
    with pytest.raises(MissingExtraError) as caught:
        require("tether.thing", "redis", modules=["tether_no_such_module"])
    assert str(caught.value) == "tether.thing needs the redis extra: pip install 'tether[redis]'"
    assert caught.value.extras == ["redis"]
    assert isinstance(caught.value, TetherError) and isinstance(caught.value, ImportError)
    assert caught.value.__suppress_context__  # raised while an ImportError is handled: no chain


def test_several_missing_extras_are_one_command() -> None:
    with pytest.raises(
        MissingExtraError, match=r"^tether demo needs the server and local extras: "
    ):
        require("tether demo", "server", "local", modules=["tether_no_such_module"])
    assert install_command("server", "local") == "pip install 'tether[server,local]'"


def test_an_installed_extra_passes_and_an_unknown_one_is_a_bug() -> None:
    require("tether.server", "server")
    with pytest.raises(ValueError, match=r"unknown extra\(s\) \['servers'\]"):
        require("tether.server", "servers")


@pytest.mark.parametrize(
    ("args", "feature", "extras"),
    [
        ([], "the tether command", ("server",)),
        (["--help"], "the tether command", ("server",)),
        (["frobnicate"], "the tether command", ("server",)),
        (["worker", "app:api"], "tether worker", ("server", "postgres", "redis")),
        (["serve", "app:api"], "tether serve", ("server",)),
        (["demo", "--port", "9000"], "tether demo", ("server", "local")),
        (["chat"], "tether chat", ("server", "local")),
        (["chat", "--thread", "t1", "--db", "x.db"], "tether chat", ("server", "local")),
        (["chat", "--help"], "tether chat", ("server",)),
        (["chat", "--thread", "t1", "app:api"], "tether chat", ("server",)),
    ],
)
def test_each_command_needs_its_extras(
    args: list[str], feature: str, extras: tuple[str, ...]
) -> None:
    assert needed_extras(args) == (feature, extras)


def test_the_cli_prints_the_install_command_verbatim(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from tether import _extras, cli

    monkeypatch.setattr(_extras, "_installed", lambda module: False)  # as if nothing were there
    with pytest.raises(typer.Exit) as caught:
        cli._require("tether demo", "server", "local")
    assert caught.value.exit_code == 2
    assert capsys.readouterr().err == (
        "error: tether demo needs the server and local extras: pip install 'tether[server,local]'\n"
    )
