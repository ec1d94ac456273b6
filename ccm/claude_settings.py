"""Claude Code's settings files, as far as ccm writes them: the `statusLine` that runs `ccm statusline`.

    install_statusline(settings_path)    put ccm's statusLine into a settings file, keeping every other setting;
                                          a different statusLine already there is saved beside it first
    user_settings() / project_settings()  `~/.claude/settings.json` (or `$CLAUDE_CONFIG_DIR/settings.json`) and
                                          `.claude/settings.json` in the current folder
    statusline_command()                  the command written: this Python, isolated (`-I -S`: no site packages to
                                          set up), running ccm/statusline.py, which needs the standard library only

The file is rewritten through a temporary file and a rename, so Claude Code never reads half of it; a file that is
not a JSON object is refused (`SettingsError`), never overwritten. The backup of a previous statusLine is
`settings.json.statusline-backup.json` beside the settings file (the statusLine object, as it was): restoring it is
copying it back.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Literal

from ccm.frozen import frozen

BACKUP_SUFFIX = ".statusline-backup.json"


class SettingsError(Exception):
    pass


@frozen
class Installed:
    path: Path
    change: Literal["added", "replaced", "unchanged"]
    backup: Path | None = None  # where a different statusLine was saved


def user_settings() -> Path:
    base = os.environ.get("CLAUDE_CONFIG_DIR")
    return (Path(base) if base else Path.home() / ".claude") / "settings.json"


def project_settings(folder: Path | None = None) -> Path:
    return (folder or Path.cwd()) / ".claude" / "settings.json"


def statusline_command() -> str:
    script = Path(__file__).resolve().with_name("statusline.py")
    return f"{shlex.quote(sys.executable)} -I -S {shlex.quote(str(script))}"


def statusline_setting(command: str | None = None) -> dict[str, Any]:
    return {"type": "command", "command": command or statusline_command(), "padding": 0}


def install_statusline(settings_path: str | os.PathLike[str], command: str | None = None) -> Installed:
    path = Path(settings_path)
    settings = _read(path)
    wanted = statusline_setting(command)
    current = settings.get("statusLine")
    if current == wanted:
        return Installed(path, "unchanged")
    backup: Path | None = None
    if current is not None and not _is_ccms(current):
        backup = path.with_name(path.name + BACKUP_SUFFIX)
        _write(backup, current)
    settings["statusLine"] = wanted
    _write(path, settings)
    return Installed(path, "added" if current is None else "replaced", backup)


def _is_ccms(setting: Any) -> bool:
    """A statusLine ccm wrote earlier (another Python, another checkout): replaced without a backup."""
    command = setting.get("command") if isinstance(setting, dict) else None
    return isinstance(command, str) and ("ccm/statusline.py" in command or command.endswith("ccm statusline"))


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise SettingsError(f"cannot read {path}: {error.strerror}") from None
    if not text.strip():
        return {}
    try:
        settings = json.loads(text)
    except ValueError as error:
        raise SettingsError(f"{path} is not valid JSON ({error}); fix it or move it away, ccm will not overwrite "
                            "it") from None
    if not isinstance(settings, dict):
        raise SettingsError(f"{path} does not hold a JSON object; ccm will not overwrite it")
    return settings


def _write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.ccm-{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if path.exists():
        os.chmod(temporary, path.stat().st_mode & 0o777)
    temporary.replace(path)
