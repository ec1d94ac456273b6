"""The key holders' dashboard at `/`: a key signs in with its own secret and sees its balance, budget and limits,
its usage over the last 24 hours and 30 days, its latest requests, and the models it may use at its prices.

    GET  /                 the dashboard (a `key` session)
    /signin, /signout      `ccm.web.signin` for the `key` audience: the secret is checked by the ledger, as the API
                           checks it (`Ledger.authenticate`), and only an active key signs in
    /static/…              the assets

A key holder sees their own key only: the page reads the ledger by the id its session was made for, and takes no
key, name or id from the request (there is no parameter to change). A key that is revoked or expired since signs its
session out on the next visit; revoking or rotating a key on the admin page ends its sessions at once.

These paths are `ccm.web.DASHBOARD_PATHS` (and `/static/…`): the mount at `/` answers them and hands every other
path on to the API (its JSON errors stay).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ccm.ledger.activity import key_activity
from ccm.ledger.errors import LedgerUnavailable
from ccm.ledger.times import now
from ccm.web.signin import Unavailable, signin_routes
from ccm.web.site import Site
from ccm.web.usage import NoLedger, ledger_of, offered_models, standing, under_policies, usage_view

CONTACT_VARIABLE = "CCM_CREDITS_CONTACT"  # who to ask for more credits (shown on the dashboard)


class Dashboard:
    def __init__(self, service: Any, environ: Mapping[str, str], site: Site) -> None:
        self.service = service
        self.site = site
        self.contact = environ.get(CONTACT_VARIABLE) or "the administrator of this ccm"

    async def verify(self, secret: str) -> str | None:
        try:
            ledger = await ledger_of(self.service)
            key = await ledger.authenticate(secret.strip())
        except NoLedger as error:
            raise Unavailable(str(error)) from None
        except LedgerUnavailable as error:
            raise Unavailable(f"the usage ledger cannot be reached now: {error.message}") from None
        if key is None or key.status(now()) != "active":
            return None
        return str(key.id)

    async def page(self, request: Request) -> Response:
        session = request.state.session
        try:
            ledger = await ledger_of(self.service)
            at = now()
            found = await key_activity(ledger.store, int(session.subject), at)
            if found is None or found[0].status(at) != "active":
                self.site.sessions.end(session)
                status = "gone" if found is None else found[0].status(at)
                response = self.site.render(request, "error.html", status_code=401, title="Signed out",
                                            message=f"this key is {status}: sign in with another key")
                self.site.clear_session_cookie(request, response, "key")
                return response
            key, account, activity = found
            key, spent = await under_policies(ledger, self.service.runtime.table, key)
        except NoLedger as error:
            return self.site.render(request, "error.html", status_code=503, title="Unavailable", message=str(error))
        except LedgerUnavailable as error:
            return self.site.render(request, "error.html", status_code=503, title="Unavailable",
                                    message=f"the usage ledger cannot be reached now: {error.message}")
        models, markup = offered_models(self.service.runtime.table, key)
        return self.site.render(request, "dashboard.html", title="Dashboard", key=standing(key, account, at, spent),
                                usage=usage_view(activity), models=models, markup=markup, contact=self.contact)


def dashboard_app(service: Any, environ: Mapping[str, str], site: Site) -> Starlette:
    """The dashboard's Starlette app for `service` (a `ccm.service.Service`), on the admin page's `Site`."""
    dashboard = Dashboard(service, environ, site)
    routes = [
        *signin_routes(site, "key", dashboard.verify),
        Route("/", site.page(dashboard.page, "key")),
        Mount("/static", app=StaticFiles(packages=[("ccm.web", "static")]), name="static"),
    ]
    return Starlette(routes=routes)
