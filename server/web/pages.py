"""Server-rendered pages of the panel (thin: data from ``namazu.server.web.data``).

Plots are drawn in the browser by plotly.js, vendored in ``static/vendor/`` and served
at ``/static/plotly.min.js`` (no CDN: the panel works offline on a farm
network); ``/static/panel.js`` fetches the JSON API and draws them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from sqlalchemy import select

from namazu.server.alerts.subscriptions import (
    OUTBOX_STATUSES,
    SUBSCRIPTION_SPECIES,
    SubscriptionError,
    add_subscription,
    list_subscriptions,
    outbox_mails,
    remove_subscription,
)
from namazu.server.store import queries
from namazu.server.store.influx import InfluxError
from namazu.server.store.models import EVENT_KINDS, ROLES, VERDICTS, User
from namazu.server.store.state import ALARM_KINDS, SEVERITIES, DataHealth, session_scope
from namazu.server.web import data
from namazu.server.web.auth import (
    AuthError,
    create_user,
    issue_token,
    role_required,
    unlock,
    validate_user_name,
)
from namazu.server.web.limits import heavy_when
from namazu.server.web.quake import quake_view

bp = Blueprint("pages", __name__)


def _handles() -> Any:
    return current_app.extensions["namazu"]


def plotly_js_path() -> Path:
    """Path of the vendored ``plotly.min.js`` (see ``static/vendor/README.md``)."""
    resource = resources.files("namazu.server.web").joinpath("static", "vendor", "plotly.min.js")
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall namazu")
    return path


@bp.get("/static/plotly.min.js")
def plotly_js() -> Any:
    """plotly.js, vendored with the panel (cached for a day)."""
    return send_file(plotly_js_path(), mimetype="text/javascript", max_age=86400)


@bp.get("/static/<any('panel.js', 'panel.css'):name>")
def static_asset(name: str) -> Any:
    """The panel's own script and style sheet (fixed names only)."""
    resource = resources.files("namazu.server.web").joinpath("static", name)
    mimetype = "text/javascript" if name.endswith(".js") else "text/css"
    with resources.as_file(resource) as path:
        return send_file(path, mimetype=mimetype, max_age=3600)


@bp.get("/metrics")
@role_required("viewer")
def metrics() -> Any:
    """Prometheus metrics of the panel process (needs a viewer token or session)."""
    from namazu.server.core.metrics import metrics_response

    return metrics_response()


@bp.get("/")
@role_required("viewer")
def overview() -> Any:
    """Farms, gateways, animals reporting, open alarms, latest quakes nearby."""
    return render_template("overview.html", farms_overview=data.overview(_handles()))


@bp.get("/timeline")
@role_required("viewer")
def timeline() -> Any:
    """Stacked timelines on one time axis: the herd, each species and chosen animals.

    ``series`` may repeat (default: the herd and each species of the farm); the range
    is ``start``/``end`` (default the last 7 days) and follows zooming in the URL.
    """
    handles = _handles()
    farm = data.farm_config(handles, request.args.get("farm"))
    start, end = data.time_range(request.args, max_days=data.TIMELINE_MAX_RANGE_DAYS)
    animals = []
    for item in data.overview(handles):
        if item["farm"] == farm.id:
            animals = item["animals"]
    chosen = [data.check_series(s) for s in request.args.getlist("series") if s]
    if not chosen:
        present = sorted({a["species"] for a in animals if a["species"] in data.SPECIES})
        chosen = ["herd", *(f"species:{s}" for s in present)]
    chosen = list(dict.fromkeys(chosen))
    if len(chosen) > data.MAX_PANELS:
        raise data.InputError(f"series: at most {data.MAX_PANELS} at once, got {len(chosen)}")
    return render_template(
        "timeline.html",
        farm=farm,
        chosen=chosen,
        labels={s: data.series_label(s) for s in chosen},
        start=data._iso_ms(start),
        end=data._iso_ms(end),
        animals=animals,
        species=data.SPECIES,
    )


@bp.get("/quake")
@role_required("viewer")
def quake() -> Any:
    """ "Did they react before this quake?": every series ±48 h around one earthquake, the
    lead-window band and the event's verdict."""
    handles = _handles()
    farm = data.farm_config(handles, request.args.get("farm"))
    view = quake_view(handles, farm, request.args.get("event") or "")
    return render_template("quake.html", view=view, farm=farm)


@bp.get("/alarms")
@role_required("viewer")
def alarms() -> Any:
    """Alarms grouped by episode, newest first, with reviews and filters."""
    return render_template(
        "alarms.html",
        listing=data.alarm_list(_handles(), request.args),
        kinds=ALARM_KINDS,
        species=data.SPECIES,
        review_states=data.REVIEW_STATES,
    )


@bp.get("/alarms/<int:alarm_id>")
@role_required("viewer")
def alarm(alarm_id: int) -> Any:
    """An alarm: its series, animals, parameters, log hash, lead-window quakes, reviews."""
    detail = data.alarm_detail(_handles(), alarm_id)
    detail["title"] = data.alarm_title(detail["kind"], detail["series"])
    detail["timezone"] = data.farm_config(_handles(), detail["farm"]).timezone
    return render_template("alarm.html", alarm=detail, verdicts=VERDICTS)


@bp.post("/alarms/<int:alarm_id>/reviews")
@role_required("reviewer")
def review(alarm_id: int) -> Any:
    """Annotate an alarm from the form on its page."""
    data.add_review(_handles(), g.user, alarm_id, request.form)
    flash("review saved")
    return redirect(url_for("pages.alarm", alarm_id=alarm_id))


@bp.post("/reviews/<int:review_id>/delete")
@role_required("reviewer")
def delete_review(review_id: int) -> Any:
    """Delete one's own review (admins: any)."""
    alarm_id = request.form.get("alarm_id", type=int)
    data.update_review(_handles(), g.user, review_id, {}, delete=True)
    flash("review deleted")
    if alarm_id:
        return redirect(url_for("pages.alarm", alarm_id=alarm_id))
    return redirect(url_for("pages.alarms"))


@bp.route("/events", methods=["GET", "POST"])
@role_required("viewer")
def events() -> Any:
    """Farm events: list, and (reviewers) a form to record one."""
    handles = _handles()
    if request.method == "POST":
        if g.user.role not in ("reviewer", "admin"):
            abort(403)
        data.new_farm_event(handles, g.user, request.form)
        flash("event recorded")
        return redirect(url_for("pages.events"))
    return render_template(
        "events.html",
        events=[e.to_dict() for e in data.farm_events(handles, None)],
        kinds=EVENT_KINDS,
    )


@bp.get("/evaluation")
@role_required("viewer")
@heavy_when(lambda: request.args.get("run"))
def evaluation() -> Any:
    """Molchan diagram, probability gain, p-values, lead time vs distance."""
    from namazu.server.web.evaluation import evaluate_request

    result = None
    error = None
    # opening the page runs the default evaluation (the last 30 days of data)
    if request.args.get("run") or not request.args:
        try:
            result = evaluate_request(_handles(), request.args)
        except data.InputError as exc:
            error = str(exc)
    return render_template(
        "evaluation.html", result=result, error=error, args=request.args, species=data.SPECIES
    )


@bp.get("/catalog")
@role_required("viewer")
def catalog() -> Any:
    """Filterable table and a map (km east/north of the farm) of catalogue events."""
    handles = _handles()
    farm = data.farm_config(handles, request.args.get("farm"))
    return render_template(
        "catalog.html", farm=farm, catalog=data.catalog(handles, farm, request.args)
    )


def _iso(value: Any) -> str:
    """ISO 8601 UTC text of an aware datetime ("" for None)."""
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


@bp.get("/health")
@role_required("viewer")
def health() -> Any:
    """Data health: offline gateways and silent animals first, then the healthy ones."""
    order = {"offline": 0, "silent": 1, "ok": 2}
    with session_scope(_handles().sessions) as db:
        rows = [
            {
                "farm": r.farm,
                "kind": r.kind,
                "name": r.name,
                "species": r.species or "",
                "gateway": r.gateway or "",
                "status": r.status,
                "since": _iso(r.since),
                "last_seen": _iso(r.last_seen),
            }
            for r in db.scalars(select(DataHealth))
        ]
    rows.sort(key=lambda r: (order.get(r["status"], 3), r["farm"], r["kind"], r["name"]))
    statement, params = queries.radio_loss()
    radio = []
    found = [i for c in _handles().influx_instances() for i in c.query(statement, params=params)]
    for item in found:
        tags = item.get("tags") or {}
        _, received, missing, loss_pct = item["values"][0]
        radio.append({"farm": tags.get("farm", ""), "animal": tags.get("subject", ""),
                      "received": received, "missing": missing, "loss_pct": loss_pct})  # fmt: skip
    radio.sort(key=lambda r: (-(r["loss_pct"] or 0), r["farm"], r["animal"]))
    return render_template("health.html", rows=rows, radio=radio)


@bp.get("/export")
@role_required("viewer")
def export() -> Any:
    """Links to the CSV and Movebank exports."""
    return render_template("export.html")


@bp.route("/admin/users", methods=["GET", "POST"])
@role_required("admin")
def users() -> Any:
    """Admins: list users, add a user, issue an API token, unlock an account (forget its
    failed log-ins)."""
    handles = _handles()
    token = None
    error = None
    if request.method == "POST":
        action = request.form.get("action")
        try:
            with session_scope(handles.sessions) as db:
                if action == "add":
                    create_user(
                        db,
                        request.form.get("name", ""),
                        request.form.get("role", ""),
                        request.form.get("password", ""),
                    )
                    flash("user added")
                elif action == "token":
                    user = db.scalar(select(User).where(User.name == request.form.get("name")))
                    if user is None:
                        raise AuthError("no such user")
                    token = issue_token(db, user, "panel")
                elif action == "unlock":
                    forgotten = unlock(db, validate_user_name(request.form.get("name", "")))
                    flash(f"{forgotten} failed log-in(s) of {request.form.get('name')} forgotten")
                else:
                    raise AuthError("unknown action")
        except AuthError as exc:
            error = str(exc)
    with session_scope(handles.sessions) as db:
        rows = [u.to_dict() for u in db.scalars(select(User).order_by(User.name))]
    status = 400 if error else 200
    return render_template("users.html", users=rows, roles=ROLES, token=token, error=error), status


@bp.route("/admin/subscriptions", methods=["GET", "POST"])
@role_required("admin")
def subscriptions() -> Any:
    """Admins: alert e-mail subscriptions (list, add, remove) and the outbox's state."""
    handles = _handles()
    error = None
    if request.method == "POST":
        action = request.form.get("action")
        try:
            with session_scope(handles.sessions) as db:
                if action == "add":
                    row = add_subscription(
                        db,
                        request.form.get("recipient", ""),
                        request.form.get("farm", ""),
                        request.form.get("species", "all"),
                        request.form.get("min_severity", "info"),
                        known_farms=[f.id for f in handles.config.farms] or None,
                    )
                    flash(f"subscription {row.id} added")
                elif action == "remove":
                    ident = request.form.get("id", type=int)
                    if ident is None:
                        raise SubscriptionError("id: a subscription number is required")
                    remove_subscription(db, ident)
                    flash(f"subscription {ident} removed")
                else:
                    raise SubscriptionError(f"unknown action {action!r}")
        except SubscriptionError as exc:
            error = str(exc)
        if error is None:
            return redirect(url_for("pages.subscriptions"))
    status_filter = request.args.get("outbox")
    if status_filter not in OUTBOX_STATUSES:
        status_filter = None
    with session_scope(handles.sessions) as db:
        rows = [s.to_dict() for s in list_subscriptions(db)]
        mails = [m.to_dict() for m in outbox_mails(db, status_filter, 100)]
    page = render_template(
        "subscriptions.html",
        subscriptions=rows,
        mails=mails,
        outbox_status=status_filter,
        outbox_statuses=OUTBOX_STATUSES,
        species=SUBSCRIPTION_SPECIES,
        severities=SEVERITIES,
        error=error,
    )
    return page, (400 if error else 200)


def register_error_handlers(app: Flask) -> None:
    """HTML error pages for the panel (the API answers JSON itself), and the
    ``alarm_title`` helper for every template."""
    app.jinja_env.globals["alarm_title"] = data.alarm_title

    @app.errorhandler(data.InputError)
    def _bad(exc: Exception) -> Any:
        return render_template("error.html", status=400, message=str(exc)), 400

    @app.errorhandler(data.NotFound)
    def _missing(exc: Exception) -> Any:
        return render_template("error.html", status=404, message=str(exc)), 404

    @app.errorhandler(PermissionError)
    def _forbidden(exc: Exception) -> Any:
        return render_template("error.html", status=403, message=str(exc)), 403

    @app.errorhandler(InfluxError)
    def _down(exc: Exception) -> Any:
        message = f"time-series store unavailable: {exc}"
        return render_template("error.html", status=503, message=message), 503

    for status in (400, 403, 404, 405, 413, 429, 500):

        def _page(exc: Exception, status: int = status) -> Any:
            if request.path.startswith("/api/"):
                return {"error": getattr(exc, "description", str(exc))}, status
            message = getattr(exc, "description", "error")
            return render_template("error.html", status=status, message=message), status

        app.register_error_handler(status, _page)
