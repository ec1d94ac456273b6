"""ccm against ccm, in one run: variants of the `ccm` target, each started beside it and measured in windows that
alternate with its own (bench.workloads.schedule), so that the ratios come from the same minutes of a noisy machine.

    python -m bench.run --variants base=04f803c[,NAME=REV…]     another revision each, run exactly as `ccm` is
    python -m bench.run --ccm-variant 'NAME:SPEC' […]           repeatable; SPEC is `;`-separated KEY=VALUE items:

        rev=REV        another revision of this repository (a commit, tag or branch, resolved once): a git worktree of
                       it under ${CCM_CACHE:-~/.cache/ccm}/bench/trees/<commit>, with a venv of its own (`pip install
                       -e` of that tree, pinned to the checkout venv's package versions where it can be), made once
                       and reused. Only `ccm run FILE --port P [args]` is used, which every revision has.
        args=WORDS     more `ccm run` arguments (shell words), after the ones the `ccm` target gets (--ccm-arg)
        env=K=V        an environment variable for the variant's process (one item per variable)
        routes=@FILE   text appended to the bench route file (a `settings { … }` block, …); routes=TEXT for a line or
                       two, with `\\n` for a newline
        setup=WORDS    a command run once before the variant first starts (cwd: its run folder, its `ccm` first on
                       PATH, its environment): `setup=ccm db upgrade --db sqlite:///{workdir}/ccm.db`
        inherit=no     without the `ccm` target's --ccm-arg words (by default a variant gets them first, then its
                       own `args`): `--ccm-arg=--no-ledger --ccm-variant 'ledger:inherit=no'` is ledger off
                       against ledger on, with the switched-on side as the variant
        label=TEXT     what the report calls it

    In args, env values, routes and setup, {workdir} is the variant's run folder (a database, files of its own) and
    {tree} the source tree it runs. `NAME:` with nothing after it is the checkout again: an A/A comparison, whose
    differences are the noise floor of the run.

Every variant is a `CcmVariant`: bench.targets.Ccm with its own interpreter, arguments, environment and route file.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.targets import CACHE, REPO, Ccm, TargetUnavailable

TREES = CACHE / "trees"
RESERVED = ("upstream", "ccm", "ccr", "litellm")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,23}$")
KEYS = ("rev", "args", "env", "routes", "setup", "inherit", "label")
READY = ".bench-ready"  # in the tree's venv, written once `pip install -e` and the import check have passed


class VariantError(Exception):
    """A variant that cannot be set up or was written wrong; the message says which and why."""


@dataclass(frozen=True)
class VariantSpec:
    name: str
    rev: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    routes: str = ""
    setup: tuple[str, ...] = ()
    inherit: bool = True  # the `ccm` target's --ccm-arg words come first
    label: str = ""

    def describe(self) -> str:
        """What the variant changes, in a few words, for the report (before {workdir} is expanded)."""
        parts = [f"revision {self.rev}"] if self.rev else []
        parts += [f"`{shlex.join(self.args)}`"] if self.args else []
        parts += [f"`{key}={value}`" for key, value in self.env]
        parts += [f"route file + `{' '.join(self.routes.split())[:80]}`"] if self.routes else []
        parts += [f"after `{shlex.join(self.setup)}`"] if self.setup else []
        parts += ["without ccm's --ccm-arg"] if not self.inherit else []
        return ", ".join(parts) or "the checkout again (A/A)"


def parse_variants(text: str) -> list[VariantSpec]:
    """`--variants base=04f803c,old=v0.1`: a revision each, named."""
    specs = []
    for item in (item.strip() for item in text.split(",")):
        if not item:
            continue
        name, equals, rev = item.partition("=")
        if not equals or not rev.strip():
            raise VariantError(f"--variants: {item!r} is not NAME=REV (e.g. base=04f803c)")
        specs.append(VariantSpec(_name(name.strip()), rev=rev.strip()))
    return specs


def parse_spec(text: str, read: Callable[[Path], str] = Path.read_text) -> VariantSpec:
    """`NAME:rev=…;args=…;env=K=V;routes=@file;setup=…;label=…` (bench.variants' docstring)."""
    name, colon, rest = text.partition(":")
    if not colon:
        raise VariantError(f"--ccm-variant {text!r}: write NAME:SPEC, e.g. \"ledger:args=--db sqlite:///{{workdir}}/"
                           "ccm.db\" (an empty SPEC, `same:`, runs the checkout again)")
    values: dict[str, str] = {}
    env: list[tuple[str, str]] = []
    for item in (item.strip() for item in rest.split(";")):
        if not item:
            continue
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or key not in KEYS:
            raise VariantError(f"--ccm-variant {name}: {item!r} is not KEY=VALUE with KEY one of {', '.join(KEYS)}")
        if key == "env":
            variable, equals, setting = value.partition("=")
            if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable.strip()):
                raise VariantError(f"--ccm-variant {name}: env={value!r} is not env=NAME=VALUE")
            env.append((variable.strip(), setting))
        elif key in values:
            raise VariantError(f"--ccm-variant {name}: {key}= given twice")
        else:
            values[key] = value.strip()
    routes = values.get("routes", "")
    if routes.startswith("@"):
        try:
            routes = read(Path(routes[1:]).expanduser())
        except OSError as error:
            raise VariantError(f"--ccm-variant {name}: routes={routes}: {error.strerror or error}") from None
    else:
        routes = routes.replace("\\n", "\n")
    try:
        args, setup = tuple(shlex.split(values.get("args", ""))), tuple(shlex.split(values.get("setup", "")))
    except ValueError as error:
        raise VariantError(f"--ccm-variant {name}: {error}") from None
    inherit = values.get("inherit", "yes").lower()
    if inherit not in ("yes", "no"):
        raise VariantError(f"--ccm-variant {name}: inherit={inherit} is yes or no")
    return VariantSpec(_name(name.strip()), rev=values.get("rev") or None, args=args, env=tuple(env),
                       routes=routes, setup=setup, inherit=inherit == "yes", label=values.get("label", ""))


def _name(name: str) -> str:
    if not NAME.match(name) or name in RESERVED:
        raise VariantError(f"a variant's name is a word of letters, digits, - or _ (at most 24), not one of "
                           f"{', '.join(RESERVED)}: {name!r}")
    return name


def check_names(specs: Sequence[VariantSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise VariantError(f"two variants are called {spec.name!r}")
        seen.add(spec.name)


def expand(text: str, workdir: Path, tree: Path) -> str:
    """{workdir} and {tree} in a spec's text (plain replacement: route files are full of braces)."""
    return text.replace("{workdir}", str(workdir)).replace("{tree}", str(tree))


# ---------------------------------------------------------------------------------------------------------------
# Another revision: a worktree and a venv of its own under the bench cache


Runner = Callable[[Sequence[str], Path | None], str]


def run_command(command: Sequence[str], cwd: Path | None = None) -> str:
    """Run `command`; its standard output, or VariantError with the end of what it said."""
    try:
        done = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise VariantError(f"`{shlex.join(command)}` failed: {error}") from None
    if done.returncode != 0:
        raise VariantError(f"`{shlex.join(command)}` exited {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-600:]}")
    return done.stdout


@dataclass(frozen=True)
class Tree:
    """A revision checked out with its own venv, ready to run."""

    commit: str
    short: str
    folder: Path
    python: Path
    pinned: bool  # its packages installed at the checkout venv's versions (else resolved afresh: said in the report)
    reused: bool


def prepare_tree(rev: str, *, repo: Path = REPO, trees: Path = TREES, base_python: Path = Ccm.python,
                 run: Runner = run_command) -> Tree:
    """The worktree of `rev` under `trees`/<commit> with a venv of its own, made now or reused from an earlier run.

    The venv is made by `base_python` (the checkout venv's interpreter: the same Python), and `pip install -e` of the
    tree is pinned to the checkout venv's package versions (`pip freeze`), so that what differs is ccm's code; when a
    revision cannot be installed so, its packages are resolved afresh and the report says it. A half-made tree (a run
    stopped mid-install) is made again."""
    try:
        commit = run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], None).strip()
    except VariantError:
        raise VariantError(f"{rev!r} is no commit of {repo}") from None
    short = run(["git", "-C", str(repo), "rev-parse", "--short", commit], None).strip()
    folder = trees / commit[:12]
    venv = folder / ".venv"
    python = venv / "bin" / "python"
    trees.mkdir(parents=True, exist_ok=True)
    with _locked(trees / ".lock"):
        if (venv / READY).exists() and _head(folder, run) == commit:
            return Tree(commit, short, folder, python, pinned=(venv / READY).read_text().startswith("pinned"),
                        reused=True)
        if folder.exists():
            shutil.rmtree(folder)
        run(["git", "-C", str(repo), "worktree", "prune"], None)
        run(["git", "-C", str(repo), "worktree", "add", "--detach", "--force", str(folder), commit], None)
        run([str(base_python), "-m", "venv", str(venv)], None)
        pins = venv / "pins.txt"
        pins.write_text(_pins(base_python, run))
        install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", str(folder)]
        try:
            run([*install, "-c", str(pins)], folder)
            pinned = True
        except VariantError:
            run(install, folder)
            pinned = False
        where = run([str(python), "-c", "import ccm; print(ccm.__file__)"], folder).strip()
        if not Path(where).resolve().is_relative_to(folder.resolve()):
            raise VariantError(f"the venv of {folder} imports ccm from {where}, not from that tree")
        (venv / READY).write_text(("pinned" if pinned else "unpinned") + f" {commit}\n")
    return Tree(commit, short, folder, python, pinned=pinned, reused=False)


def _head(folder: Path, run: Runner) -> str:
    try:
        return run(["git", "-C", str(folder), "rev-parse", "HEAD"], None).strip()
    except VariantError:
        return ""


def _pins(python: Path, run: Runner) -> str:
    """The checkout venv's packages as `name==version` constraints (editable and direct-URL ones left out)."""
    try:
        frozen = run([str(python), "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"], None)
    except VariantError:
        return ""
    return "".join(line + "\n" for line in frozen.splitlines() if re.fullmatch(r"[A-Za-z0-9._-]+==[^\s;@]+", line))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One run at a time sets up trees (two `make bench` at once would install into the same venv)."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------------------------
# The target


@dataclass
class CcmVariant(Ccm):
    """`ccm run` as the `ccm` target runs it, changed as its spec says: another tree's interpreter, more arguments,
    more environment, more route-file text."""

    spec: VariantSpec = field(default_factory=lambda: VariantSpec("variant"))
    source: Tree | None = None
    set_up: bool = False

    def __post_init__(self) -> None:
        if self.source is not None:
            self.python = self.source.python

    @property
    def tree(self) -> Path:
        return self.source.folder if self.source else REPO

    def expanded(self, text: str) -> str:
        return expand(text, self.workdir, self.tree)

    @property
    def variant_args(self) -> list[str]:
        return [self.expanded(word) for word in self.spec.args]

    def version(self) -> str:
        return self.source.short if self.source else super().version()

    def routes_text(self) -> str:
        extra = self.expanded(self.spec.routes)
        return super().routes_text() + (f"\n# Appended for the variant {self.spec.name}:\n{extra.rstrip()}\n"
                                        if extra.strip() else "")

    def environment(self) -> dict[str, str]:
        environ = super().environment()
        environ.update({key: self.expanded(value) for key, value in self.spec.env})
        return environ

    def command(self, routes: Path) -> list[str]:
        return [*super().command(routes), *self.variant_args]

    async def start(self, timeout: float = 90.0) -> None:
        if not self.set_up and self.spec.setup:
            self.workdir.mkdir(parents=True, exist_ok=True)
            environ = self.environment()
            environ["PATH"] = f"{self.python.parent}{os.pathsep}{environ.get('PATH', '')}"
            command = [self.expanded(word) for word in self.spec.setup]
            try:
                done = subprocess.run(command, cwd=self.workdir, env=environ, capture_output=True, text=True,
                                      timeout=300)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise TargetUnavailable(f"setup `{shlex.join(command)}` failed: {error}") from None
            if done.returncode != 0:
                raise TargetUnavailable(f"setup `{shlex.join(command)}` exited {done.returncode}: "
                                        f"{(done.stderr or done.stdout).strip()[-400:]}")
        self.set_up = True
        await super().start(timeout)

    def describe(self) -> dict[str, object]:
        """What the results record about the variant: enough to rerun it."""
        return {"of": "ccm", "label": self.spec.label or self.spec.name, "changes": self.spec.describe(),
                "rev": self.spec.rev, "commit": self.source.commit if self.source else None,
                "pinned": self.source.pinned if self.source else None,
                "args": [*self.extra_args, *self.variant_args], "env": dict(self.spec.env),
                "routes": self.spec.routes or None, "setup": list(self.spec.setup) or None}


def variant_targets(specs: Sequence[VariantSpec], runs: Path, upstream_url: str, ccm_args: list[str],
                    prepare: Callable[[str], Tree] = prepare_tree) -> list[CcmVariant]:
    """A started-to-be target per spec (trees prepared first: a revision that cannot be set up stops the run before
    anything is measured)."""
    targets = []
    for spec in specs:
        source = prepare(spec.rev) if spec.rev else None
        label = spec.label or (f"ccm {source.short}" if source else f"ccm ({spec.name})")
        targets.append(CcmVariant(spec.name, label, runs / spec.name, upstream_url=upstream_url,
                                  extra_args=list(ccm_args) if spec.inherit else [], spec=spec, source=source))
    return targets
