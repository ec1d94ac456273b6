"""What the admin page's handlers share: the service, the environment, the route file, the page's own saves."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio

from ccm.compile.check import Checked, RouteText, check
from ccm.core.runtime import Runtime
from ccm.web.routefile import Git, Redaction, RouteFile, Snapshot
from ccm.web.site import Site
from ccm.web.views import AdminSave

SAVES_KEPT = 100


@dataclass(slots=True)
class AdminContext:
    site: Site
    service: object  # ccm.service.Service (typed loosely: ccm.web must not need the service to be imported)
    environ: Mapping[str, str]
    file: RouteFile
    git: Git
    saves: collections.deque[AdminSave] = field(default_factory=lambda: collections.deque(maxlen=SAVES_KEPT))

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.service.holder.current  # type: ignore[attr-defined]
        return runtime

    @property
    def name(self) -> str:
        """How the reloader names the file in diagnostics and versions (`str(path)`): the editor's check uses the
        same name, so its table version is the version the reload will report."""
        return str(self.file.path)

    def snapshot(self) -> tuple[Snapshot, Redaction]:
        snapshot = self.file.read()
        return snapshot, Redaction.of(snapshot.text, self.name)

    async def check_text(self, text: str) -> Checked:
        """The one check (`ccm check`'s), on text that is not on disk yet, off the event loop."""
        source = RouteText(text, self.name, self.file.path.parent)
        return await anyio.to_thread.run_sync(lambda: check(source, self.environ))
