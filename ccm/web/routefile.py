"""The route file as the admin page reads and writes it: versions, the atomic save, redaction, git.

    RouteFile(path)
      .read() -> Snapshot            the text and its version (a hash of the file's bytes: what `If-Match` names)
      .save(text, expected)          write the text if the file is still at `expected`: a temporary file in the
                                     same folder, flushed, then renamed over the file (`Conflict` otherwise)
    Redaction.of(text, file)         literal secrets written in the file (a `key "sk-…"`, an `auth "…"`, a
                                     credential header, an `env("X", "default")`'s default in those places) and
                                     how to show the text without them and put them back
    Git(folder)                      the working-tree status and diff of the route file, and a commit of it

The only file written is the route file the service serves (its real path, when it is a symlink: the link stays);
no path ever comes from a request. The file watcher notices the rename and reloads, as it does for any editor.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import anyio

from ccm.dsl import parse
from ccm.dsl import syntax as s
from ccm.dsl.parser import RouteSyntaxError
from ccm.frozen import frozen

GIT_TIMEOUT = 20.0
CREDENTIAL_HEADER = re.compile(r"authorization|.*(key|token|secret|password).*", re.I)
# Where the file does not parse, secrets are found by shape: a `key` or `auth` item's strings.
_LOOSE = re.compile(r'(?<![\w"])(?:key|auth)[ \t]+((?:"(?:[^"\\\n]|\\.)*"[ \t]*)+)')
_USERINFO = re.compile(r"://[^/@\s]*@")  # a URL that carries a user:password
PLACEHOLDER = '"[redacted secret {}]"'
_PLACEHOLDER = re.compile(r'"\[redacted secret (\d+)\]"')


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@frozen
class Snapshot:
    text: str
    version: str


class Conflict(Exception):
    """The file changed since the version the editor started from."""

    def __init__(self, current: Snapshot) -> None:
        super().__init__(f"the route file is now at version {current.version}")
        self.current = current


class RouteFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = anyio.Lock()

    @property
    def target(self) -> Path:
        return Path(os.path.realpath(self.path))

    def read(self) -> Snapshot:
        data = self.target.read_bytes()
        return Snapshot(data.decode("utf-8", "replace"), version_of(data))

    async def save(self, text: str, expected: str) -> Snapshot:
        """Write `text` if the file is still at `expected`; the new snapshot. Saves are serialised, and the version
        is compared just before the rename, so of two admins who started from one version only the first wins."""
        async with self._lock:
            return await anyio.to_thread.run_sync(self._save, text, expected)

    def _save(self, text: str, expected: str) -> Snapshot:
        current = self.read()
        if current.version != expected:
            raise Conflict(current)
        target = self.target
        data = text.encode("utf-8")
        mode = target.stat().st_mode & 0o7777
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".ccm-admin")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return Snapshot(text, version_of(data))


def unified_diff(before: str, after: str, name: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        f"{name} (on disk)", f"{name} (edited)", n=2))


# --- literal secrets --------------------------------------------------------------------------------------------


@frozen
class Redaction:
    """The literal secrets of a text, in order: `shown(text)` puts a numbered placeholder in place of each (as a
    string literal, so the shown text still parses), `restore(text)` puts them back."""

    secrets: tuple[str, ...]  # string literals as written, quotes included

    @classmethod
    def of(cls, text: str, file: str) -> Redaction:
        try:
            tree = parse(text, file)
        except RouteSyntaxError:
            found = [string for hit in _LOOSE.finditer(text) for string in _string_literals(hit.group(1))]
            return cls(tuple(dict.fromkeys(found)))
        raw = [string.raw for string in _secret_strings(tree)]
        return cls(tuple(dict.fromkeys(r for r in raw if r not in ('""',))))

    def shown(self, text: str) -> str:
        for number, secret in enumerate(self.secrets, 1):
            text = text.replace(secret, PLACEHOLDER.format(number))
        return text

    def restore(self, text: str) -> str:
        """The text with each placeholder replaced by its secret. `UnknownPlaceholder` for a number that is not
        one of this file's (a placeholder copied from another version)."""

        def put_back(match: re.Match[str]) -> str:
            number = int(match.group(1))
            if not 0 < number <= len(self.secrets):
                raise UnknownPlaceholder(match.group(0))
            return self.secrets[number - 1]

        return _PLACEHOLDER.sub(put_back, text)

    def values(self) -> list[str]:
        out = []
        for secret in self.secrets:
            try:
                out.append(json.loads(secret))
            except ValueError:
                out.append(secret.strip('"'))
        return [v for v in out if len(v) >= 4]


class UnknownPlaceholder(ValueError):
    pass


def _string_literals(text: str) -> list[str]:
    """The complete `"…"` literals in `text`, in one pass (a regex retried at every quote is quadratic on `\\"`
    repeated: tests/security/test_regex_budget.py)."""
    found: list[str] = []
    at, end = 0, len(text)
    while (start := text.find('"', at)) >= 0:
        scan = start + 1
        while scan < end and text[scan] not in '"\n':
            scan += 2 if text[scan] == "\\" else 1
        if scan < end and text[scan] == '"':
            found.append(text[start: scan + 1])
            scan += 1
        at = scan
        if at >= end:
            break
    return found


def _secret_strings(tree: s.SourceFile) -> list[s.Str]:
    found: list[s.Str] = []

    def strings(arg: object) -> list[s.Str]:
        if isinstance(arg, s.Str):
            return [arg]
        if isinstance(arg, s.Env):
            return [arg.default] if arg.default is not None else []
        return []

    def strings_of(args: tuple[object, ...]) -> list[s.Str]:
        return [string for arg in args for string in strings(arg)]

    for statement in tree.statements:
        if not isinstance(statement, s.Block) or statement.keyword.text not in ("provider", "settings"):
            continue
        for item in statement.items:
            if not isinstance(item, s.Item):
                continue
            if item.keyword.text == "url":
                found += [arg for arg in strings_of(item.args) if _USERINFO.search(arg.value)]
            elif item.keyword.text in ("key", "auth"):
                for arg in item.args:
                    found += strings(arg)
            elif item.keyword.text == "headers":
                for arg in item.args:
                    if isinstance(arg, s.Object):
                        for member in arg.members:
                            name = member.key.value if isinstance(member.key, s.Str) else member.key.text
                            if CREDENTIAL_HEADER.fullmatch(name):
                                found += strings(member.value)
    return found


def redact_lines(text: str, values: list[str]) -> str:
    """Text that may quote any version of the file (a git diff): known secret values cut, and a `key`/`auth`
    item's strings on any line replaced by shape."""
    for value in sorted(set(values), key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return _LOOSE.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + '"[redacted]"', text)


# --- git --------------------------------------------------------------------------------------------------------


@frozen
class GitResult:
    ok: bool
    output: str


class Git:
    """git, run in the route file's folder (`git -C`), never with a remote: status, diff and commit of the route file
    only. Hooks of the repository run as they would for its owner; a run that takes over GIT_TIMEOUT is stopped."""

    def __init__(self, file: Path) -> None:
        self.file = Path(os.path.realpath(file))
        self.folder = self.file.parent

    async def _run(self, *args: str) -> GitResult:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_EDITOR": "true", "LC_ALL": "C"}
        try:
            with anyio.fail_after(GIT_TIMEOUT):
                done = await anyio.run_process(["git", "-C", str(self.folder), "--no-pager", *args], env=env,
                                               check=False)
        except (OSError, TimeoutError) as error:
            return GitResult(False, f"git could not run: {error}")
        out = (done.stdout + done.stderr).decode("utf-8", "replace")
        return GitResult(done.returncode == 0, out)

    async def repository(self) -> Path | None:
        result = await self._run("rev-parse", "--show-toplevel")
        return Path(result.output.strip()) if result.ok else None

    async def status(self) -> str:
        return (await self._run("status", "--short", "--", self.file.name)).output

    async def diff(self) -> str:
        tracked = await self._run("ls-files", "--error-unmatch", "--", self.file.name)
        if not tracked.ok:
            return f"{self.file.name} is not tracked yet: committing adds it.\n"
        return (await self._run("diff", "HEAD", "--", self.file.name)).output

    async def commit(self, message: str) -> GitResult:
        added = await self._run("add", "--", self.file.name)
        if not added.ok:
            return added
        return await self._run("commit", "-m", message, "--", self.file.name)
