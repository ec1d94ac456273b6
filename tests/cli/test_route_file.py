"""One route file for every folder: the argument, $CCM_ROUTES, ./routes.ccm, then
${XDG_CONFIG_HOME:-~/.config}/ccm/routes.ccm; `ccm init` writes the starter there; an installed ccm carries it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest

from ccm.cli.route_file import find_route_file, starter_text, user_routes
from ccm.compile.check import check
from tests.conftest import REPO

from .test_cli import CCM, environment, fake_claude, stop_listed_routers


def test_the_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project, config = tmp_path / "project", tmp_path / "config"
    project.mkdir()
    monkeypatch.chdir(project)
    environ = {"XDG_CONFIG_HOME": str(config)}
    with pytest.raises(click.ClickException, match="`ccm init` writes a starter file there"):
        find_route_file(None, environ)
    assert find_route_file(None, environ, required=False) is None
    mine = user_routes(environ)
    assert mine == config / "ccm" / "routes.ccm"
    mine.parent.mkdir(parents=True)
    mine.write_text("x")
    assert find_route_file(None, environ) == mine
    (project / "routes.ccm").write_text("x")
    assert find_route_file(None, environ) == Path("routes.ccm")
    named = tmp_path / "team.ccm"
    named.write_text("x")
    assert find_route_file(None, {**environ, "CCM_ROUTES": str(named)}) == named
    assert find_route_file("routes.ccm", {**environ, "CCM_ROUTES": str(named)}) == Path("routes.ccm")
    # a file that is named must exist: naming one is never a request to look elsewhere
    with pytest.raises(click.ClickException, match=r"route file not found: .*gone.ccm \(named by \$CCM_ROUTES\)"):
        find_route_file(None, {**environ, "CCM_ROUTES": str(tmp_path / "gone.ccm")})
    assert Path.home() / ".config" / "ccm" / "routes.ccm" == user_routes({})


def test_init_writes_a_starter_that_checks_and_keeps_an_existing_file(tmp_path: Path) -> None:
    env = environment(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run([*CCM, "init"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    written = tmp_path / "config" / "ccm" / "routes.ccm"
    assert done.returncode == 0 and str(written) in done.stdout, done.stderr
    assert written.read_text() == starter_text() == (REPO / "routes.ccm").read_text()
    checked = check(written, {})
    assert checked.ok and len(checked.table.tests if checked.table else ()) > 0  # its tests run and pass
    again = subprocess.run([*CCM, "init"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "--force" in again.stderr


def test_code_from_any_folder_uses_the_users_route_file(tmp_path: Path) -> None:
    elsewhere = tmp_path / "some-project"
    elsewhere.mkdir()
    env = environment(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"), CCM_CLAUDE=str(fake_claude(tmp_path)))
    subprocess.run([*CCM, "init"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=60)
    try:
        done = subprocess.run([*CCM, "code", "--", "-p", "hi"], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 7, done.stderr
        assert "router started" in done.stderr, done.stderr
        assert "args=-p hi" in done.stdout
    finally:
        stop_listed_routers(tmp_path)


@pytest.mark.slow
def test_an_installed_ccm_works_outside_the_checkout(tmp_path: Path) -> None:
    """What `pipx install` / `uv tool install` of the checkout do, without their own environment: build the wheel,
    install it apart from the checkout (its dependencies from the test environment), and use it from another folder."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("ccm-*.whl")
    assert "ccm/cli/starter.ccm" in zipfile.ZipFile(wheel).namelist()
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": f"{target}:{site}",
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    folder = tmp_path / "project"
    folder.mkdir()
    # -I -S: neither the checkout nor the test environment's editable-install hook; the installed copy, then the
    # dependencies
    ccm = [sys.executable, "-I", "-S", "-c", "import sys; sys.path[:0] = sys.argv.pop(1).split(':'); "
           "import ccm; assert not ccm.__file__.startswith(sys.argv.pop(1)), ccm.__file__; "
           "from ccm.cli.entry import main; main()", f"{target}:{site}", str(REPO)]
    for command in (["init"], ["check", str(tmp_path / "config" / "ccm" / "routes.ccm")], ["models"]):
        done = subprocess.run([*ccm, *command], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
