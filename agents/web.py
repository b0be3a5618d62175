"""The worker's HTTP surface: ``/metrics``, ``/healthz``, ``/readyz`` and the ``/api`` views.

Thin glue: every answer is a function of the worker's merged partials (``streams``) or of
its deals table.  One aiohttp middleware sits in front of every route, Faust's own
included, and applies the access rules:

* ``/metrics``, ``/healthz`` and ``/readyz`` are open: Prometheus and the Kubernetes
  probes carry no token.
* Every other path needs ``Authorization: Bearer <SALESOPS_API_TOKEN>`` when a token is
  set; otherwise 401 with a JSON error and ``WWW-Authenticate: Bearer``.  The token is
  compared in constant time.
* ``/api/*`` answers 503 ``{"error": "not ready", "missing": [...]}`` until the worker is
  ready (:func:`readiness`), instead of empty views that look like real zeros.
* ``/`` (and ``/overview``) is the read-only HTML overview (:mod:`agents.overview`): under
  the same token rule, a 503 HTML page while not ready; its static files under
  ``/overview/`` carry no data.

The server binds ``SALESOPS_WEB_HOST`` (default 127.0.0.1); binding another address
without a token is logged as a warning at start.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web as aioweb
from aiohttp.typedefs import Handler, Middleware
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents import overview
from agents.records import DealRecord
from agents.settings import is_loopback
from streams import pulse
from streams.periods import Period, PeriodError, current_month, parse_period, range_period
from streams.pipeline_views import aging, funnel, movement, pipeline_rows

if TYPE_CHECKING:
    from agents.app import SalesopsWorker

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
MAX_WINDOW_DAYS = 9999  # the same bound as a last-Nd period
_WINDOW = re.compile(r"(\d{1,4})d")


def query_period(query: Mapping[str, str], now: int, worker: SalesopsWorker, default: str) -> Period:
    """The period of a request: ``from=YYYY-MM-DD&to=YYYY-MM-DD`` (both days included),
    else ``period=<label>`` (fiscal labels with ``SALESOPS_FISCAL_YEAR_START_MONTH``),
    else ``default``; PeriodError (a 400) for anything else, or both forms at once."""
    first, last = query.get("from"), query.get("to")
    if first is not None or last is not None:
        if first is None or last is None:
            raise PeriodError("a range needs both from=YYYY-MM-DD and to=YYYY-MM-DD")
        if query.get("period"):
            raise PeriodError("give either period= or from= and to=, not both")
        return range_period(first, last)
    label = query.get("period") or default
    return parse_period(label, now, worker.tz, worker.settings.fiscal_year_start_month)


def readiness(worker: SalesopsWorker) -> list[str]:
    """What the worker still lacks before its answers are complete ([] = ready).

    * its assigned partitions are recovered: Faust has replayed the changelogs of the
      partitions this worker was given and the tables' recovery callbacks (which rebuild
      the views) have run;
    * the partials reader has read the partials topic to its end once, so the merged
      views hold every partition's latest partial, not only this worker's.

    Later rebalances do not make a worker unready: the merged views come from the partials
    of every partition, which stay valid while partitions move (see ``rebalancing`` in
    ``/readyz``).
    """
    missing = []
    recovery = worker.app.tables.recovery  # type: ignore[attr-defined]  # TableManager's
    if not recovery.completed.is_set():
        missing.append("recovery: the assigned partitions' tables are not recovered yet")
    if not worker.reader_caught_up:
        missing.append("partials: the partials reader has not read the partials topic to its end yet")
    return missing


def bearer_ok(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, scheme case-insensitive, token in constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def access_middleware(worker: SalesopsWorker) -> Middleware:
    token = worker.settings.api_token.value

    @aioweb.middleware
    async def access(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        if token and not bearer_ok(request.headers.get("Authorization"), token):
            given = "Authorization" in request.headers
            challenge = 'Bearer realm="salesops"' + (', error="invalid_token"' if given else "")
            return aioweb.json_response(
                {"error": "invalid token" if given else "missing bearer token (Authorization: Bearer ...)"},
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        if request.path.startswith("/api/"):
            missing = readiness(worker)
            if missing:
                return aioweb.json_response(
                    {"error": "not ready", "missing": missing}, status=503, headers={"Retry-After": "5"}
                )
        return await handler(request)

    return access


def warn_if_exposed(worker: SalesopsWorker) -> None:
    s = worker.settings
    if not is_loopback(s.web_host) and not s.api_token:
        log.warning(
            "web_exposed host=%s port=%s api_token=unset: /api answers anyone who can reach this "
            "address; set SALESOPS_API_TOKEN or bind SALESOPS_WEB_HOST=127.0.0.1",
            s.web_host or "*",
            s.web_port,
        )


def define_routes(worker: SalesopsWorker) -> None:
    """Register the access middleware and every route on ``worker.app``."""
    app = worker.app
    cast(AiohttpWeb, app.web).web_app.middlewares.append(access_middleware(worker))
    warn_if_exposed(worker)

    def _json(view: View, payload: Any, status: int = 200) -> Response:
        return view.json(payload, status=status)

    @app.page("/metrics")
    async def metrics_page(view: View, request: Request) -> Response:
        # ?name[]=a&name[]=b: only those samples, as client_python's own handler does (a
        # whole page is ~1,400 series, ~20 ms of the event loop; a poller of one counter
        # should not pay that)
        names = request.query.getall("name[]", [])  # type: ignore[attr-defined]  # aiohttp's
        registry = worker.metrics.registry
        # aiohttp refuses a charset inside content_type=, so the header is set directly
        return aioweb.Response(  # type: ignore[return-value]  # faust's Response is aiohttp's
            body=generate_latest(registry.restricted_registry(names) if names else registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def overview_page(view: View, request: Request) -> Response:
        return overview.page_response(readiness(worker))  # type: ignore[return-value]  # aiohttp's

    # Registered before Faust adds its own "/" ({"status": "OK"}) at server start: the
    # first route of a path answers.
    app.page("/", name="overview")(overview_page)
    app.page("/overview", name="overview_alias")(overview_page)

    def asset_page(name: str) -> Any:
        overview.read(name)  # fail at start, not at the first request, if a file is missing

        async def page(view: View, request: Request) -> Response:
            return overview.asset_response(name)  # type: ignore[return-value]

        return page

    for name in overview.ASSETS:
        app.page(f"/overview/{name}", name=f"overview_{name}")(asset_page(name))

    @app.page("/healthz")
    async def healthz_page(view: View, request: Request) -> Response:
        # answered by the event loop itself: a blocked loop answers nothing
        return _json(view, {"status": "ok"})

    @app.page("/readyz")
    async def readyz_page(view: View, request: Request) -> Response:
        missing = readiness(worker)
        body = {
            "status": "not ready" if missing else "ready",
            "missing": missing,
            "rebalancing": bool(app.rebalancing),
        }
        return _json(view, body, status=503 if missing else 200)

    @app.page("/api/pipeline")
    async def pipeline_page(view: View, request: Request) -> Response:
        merged = worker.merged_deals()
        return _json(
            view,
            {
                "as_of": worker.global_now_ms(),
                "currency": worker.rates.reporting_currency,
                **pipeline_rows(merged["views"]),
            },
        )

    @app.page("/api/funnel")
    async def funnel_page(view: View, request: Request) -> Response:
        now = worker.global_now_ms()
        default = f"last-{worker.settings.trailing_windows_days[0]}d"
        try:
            period = query_period(request.query, now, worker, default)
        except PeriodError as exc:
            return _json(view, {"error": str(exc)}, status=400)
        merged = worker.merged_deals()
        return _json(view, {"as_of": now, **funnel(merged["views"], worker.config, period, now)})

    @app.page("/api/aging")
    async def aging_page(view: View, request: Request) -> Response:
        now = worker.global_now_ms()
        return _json(view, {"as_of": now, "stages": aging(worker.merged_deals()["views"], now)})

    @app.page("/api/movement")
    async def movement_page(view: View, request: Request) -> Response:
        now = worker.global_now_ms()
        try:
            period = query_period(request.query, now, worker, current_month(now, worker.tz).label)
            if period.label.startswith("last-"):
                raise PeriodError("movement needs a month (YYYY-MM) or quarter (YYYY-Qn)")
            pipelines = movement(worker.merged_deals()["views"], period)  # whole months only
        except PeriodError as exc:
            return _json(view, {"error": str(exc)}, status=400)
        return _json(view, {"as_of": now, "period": period.label, "pipelines": pipelines})

    define_target_routes(worker, _json)

    @app.page("/api/alerts")
    async def alerts_page(view: View, request: Request) -> Response:
        status = request.query.get("status")
        alerts = [a for a in worker.merged_deals()["stalled"] if status is None or a["status"] == status]
        return _json(view, {"alerts": alerts})

    @app.page("/api/deals/{deal_id}")
    @app.table_route(table=worker.deals, match_info="deal_id")
    async def deal_page(view: View, request: Request, deal_id: str) -> Response:

        stored = worker.deals.get(deal_id.encode())
        if not stored:
            if app.rebalancing:  # the deal's partition may be moving here: not a real 404
                return _json(view, {"error": "not ready", "missing": ["rebalancing"]}, status=503)
            return _json(view, {"error": f"deal {deal_id!r} not found"}, status=404)
        return _json(view, deal_json(DealRecord.from_bytes(stored)))

    @app.page("/api/enps")
    async def enps_page(view: View, request: Request) -> Response:
        window = request.query.get("window", "30d")
        m = _WINDOW.fullmatch(window)
        days = int(m[1]) if m else 0
        if not 1 <= days <= MAX_WINDOW_DAYS:
            return _json(
                view, {"error": f"window must be 1d..{MAX_WINDOW_DAYS}d, got {window!r}"}, status=400
            )
        rows = pulse.enps_view(
            worker.merged_pulse(), days, worker.now_ms(), worker.settings.anonymity_threshold
        )
        group = request.query.get("group")
        if group:
            rows = [r for r in rows if r["group"] == group]
        return _json(
            view, {"window": window, "threshold": worker.settings.anonymity_threshold, "groups": rows}
        )

    @app.page("/api/pulse")
    async def pulse_page(view: View, request: Request) -> Response:
        survey = request.query.get("survey")
        if not survey:
            return _json(view, {"error": "survey is required"}, status=400)
        merged = worker.merged_pulse()
        k = worker.settings.anonymity_threshold
        return _json(
            view,
            {
                "survey": survey,
                "threshold": k,
                "enps": pulse.enps_survey_view(merged, survey, k),
                "questions": pulse.pulse_view(merged, survey, k),
            },
        )


def deal_json(rec: DealRecord) -> dict[str, Any]:
    d = rec.deal
    return {
        "deal_id": d.deal_id,
        "pipeline": d.pipeline,
        "stage": d.stage,
        "status": d.status,
        "amount": str(d.amount),
        "currency": d.currency,
        "owner_id": d.owner_id,
        "team": d.team,
        "region": d.region,
        "probability": d.probability,
        "created_at": d.created_at,
        "closed_at": d.closed_at,
        "history": [
            {"stage": v.stage, "entered_at": v.entered_at, "exited_at": v.exited_at} for v in d.history()
        ],
        "alert": rec.alert,
    }


def define_target_routes(worker: SalesopsWorker, as_json: Callable[..., Response]) -> None:
    """``/api/forecast``, ``/api/attainment`` and ``/api/commission`` (agents/targets.py)."""
    from agents.targets import BREAKDOWNS

    app, targets = worker.app, worker.targets

    def waiting(view: View) -> Response | None:
        why = targets.not_ready()
        if why is None:
            return None
        response = as_json(view, {"error": "not ready", "missing": [why]}, status=503)
        response.headers["Retry-After"] = "5"
        return response

    def asked_period(request: Request) -> bool:
        return any(request.query.get(k) for k in ("period", "from", "to"))

    def quota_period_asked(view: View, request: Request) -> tuple[str | None, Response | None]:
        """``(label, None)``: the quota period a request asks for (label None: every quota
        period); ``(None, the 400)`` for a bad period or one without quotas (attainment and
        commission alike)."""
        if not asked_period(request):
            return None, None
        latest, config = targets.latest, targets.quota_config
        assert latest is not None and config is not None
        try:
            period = query_period(request.query, latest.now_ms, worker, "")
        except PeriodError as exc:
            return None, as_json(view, {"error": str(exc)}, status=400)
        label = targets.quota_period(period)
        if label is None:
            periods = [p.label for p in config.periods()]
            return None, as_json(
                view,
                {
                    "error": f"no quota for period {period.label}; quota periods: {periods}",
                    "periods": periods,
                },
                status=400,
            )
        return label, None

    @app.page("/api/forecast")
    async def forecast_page(view: View, request: Request) -> Response:
        if (busy := waiting(view)) is not None:
            return busy
        latest = targets.latest
        assert latest is not None
        by = request.query.get("by") or "all"
        if by not in BREAKDOWNS:
            return as_json(
                view, {"error": f"by must be one of {', '.join(BREAKDOWNS)}, got {by!r}"}, status=400
            )
        pipeline = request.query.get("pipeline") or None
        try:
            period = query_period(request.query, latest.now_ms, worker, latest.periods[0].label)
        except PeriodError as exc:
            return as_json(view, {"error": str(exc)}, status=400)
        if period.label.startswith("last-"):
            return as_json(
                view, {"error": "a forecast needs a fixed period, not a trailing window"}, status=400
            )
        label = targets.precomputed(period)
        if label is not None and (pipeline is None or by in ("all", "pipeline")):
            dimension = "pipeline" if pipeline is not None else by
            figures = [
                f
                for f in latest.forecasts
                if f.period == label
                and f.dimension == dimension
                and (pipeline is None or f.member == pipeline)
            ]
            computed = "precomputed"
        else:
            figures = await targets.forecast_on_request(period, pipeline, by)
            computed = "on_request"
        return as_json(view, targets.forecast_json(figures, period, by, pipeline, computed))

    @app.page("/api/attainment")
    async def attainment_page(view: View, request: Request) -> Response:
        if targets.quota_config is None:
            return as_json(
                view,
                {"quotas": [], "territories": [], "reason": "no quotas file: set SALESOPS_QUOTAS_FILE"},
            )
        if (busy := waiting(view)) is not None:
            return busy
        label, refused = quota_period_asked(view, request)
        if refused is not None:
            return refused
        return as_json(view, targets.attainment_json(label))

    @app.page("/api/commission")
    async def commission_page(view: View, request: Request) -> Response:
        if targets.plans is None:
            return as_json(view, {"statements": [], "reason": "no plans file: set SALESOPS_PLANS_FILE"})
        if (busy := waiting(view)) is not None:
            return busy
        label, refused = quota_period_asked(view, request)
        if refused is not None:
            return refused
        owner = request.query.get("owner") or None
        body = targets.commission_json(owner, label)
        if owner is not None and not body["statements"]:
            return as_json(view, {"error": f"no commission statement for owner {owner!r}"}, status=404)
        return as_json(view, body)
