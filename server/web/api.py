"""The JSON API under ``/api/v1`` (described by ``/api/v1/openapi.json``).

Authentication: the panel's session cookie (state-changing calls then need the
``X-CSRF-Token`` header) or ``Authorization: Bearer <token>`` (``namazu users token``).
Reading needs the viewer role; annotating alarms and recording farm events the
reviewer role. Errors are JSON ``{"error": "..."}`` with 400, 401, 403, 404, 429 (too many
heavy requests at once: exports and evaluations; ``Retry-After`` says when to retry) or
503.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from namazu.server.store.influx import InfluxError
from namazu.server.web import data, exports
from namazu.server.web.auth import role_required
from namazu.server.web.limits import heavy
from namazu.server.web.quake import quake_view

bp = Blueprint("api", __name__, url_prefix="/api/v1")

_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9_.-]+")


def _handles() -> Any:
    return current_app.extensions["namazu"]


@bp.errorhandler(data.InputError)
def _bad_input(exc: data.InputError) -> Any:
    return jsonify({"error": str(exc)}), 400


@bp.errorhandler(data.NotFound)
def _not_found(exc: data.NotFound) -> Any:
    return jsonify({"error": str(exc)}), 404


@bp.errorhandler(PermissionError)
def _forbidden(exc: PermissionError) -> Any:
    return jsonify({"error": str(exc)}), 403


@bp.errorhandler(InfluxError)
def _influx_down(exc: InfluxError) -> Any:
    return jsonify({"error": f"time-series store unavailable: {exc}"}), 503


def _body() -> dict[str, Any]:
    if request.is_json:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise data.InputError("body: expected a JSON object")
        return payload
    return request.form.to_dict()


@bp.get("/openapi.json")
def openapi() -> Any:
    """The OpenAPI 3 document of this API."""
    text = resources.files("namazu.server.web").joinpath("openapi.json").read_text(encoding="utf-8")
    return Response(text, mimetype="application/json")


@bp.get("/farms")
@role_required("viewer")
def farms() -> Any:
    """Configured farms: id, name, latitude [deg N], longitude [deg E], timezone."""
    return jsonify(
        [
            {
                "id": f.id,
                "name": f.name or f.id,
                "latitude": f.latitude,
                "longitude": f.longitude,
                "timezone": f.timezone,
            }
            for f in _handles().config.farms
        ]
    )


@bp.get("/overview")
@role_required("viewer")
def overview() -> Any:
    """Per farm: gateways, animals, open alarms, latest nearby quakes."""
    return jsonify(data.overview(_handles()))


@bp.get("/gateways")
@role_required("viewer")
def gateways() -> Any:
    """Gateways of a farm with online state, last report and clock offset [s]."""
    farm = data.farm_config(_handles(), request.args.get("farm"))
    items = [f for f in data.overview(_handles()) if f["farm"] == farm.id]
    return jsonify(items[0]["gateways"] if items else [])


@bp.get("/animals")
@role_required("viewer")
def animals() -> Any:
    """Animals of a farm with species, gateway and last sample time."""
    farm = data.farm_config(_handles(), request.args.get("farm"))
    items = [f for f in data.overview(_handles()) if f["farm"] == farm.id]
    return jsonify(items[0]["animals"] if items else [])


@bp.get("/timeline")
@role_required("viewer")
def timeline() -> Any:
    """Activity, baseline, threshold, alarm spans, quakes and farm events of a series."""
    handles = _handles()
    farm = data.farm_config(handles, request.args.get("farm"))
    series = data.check_series(request.args.get("series"))
    start, end = data.time_range(request.args, max_days=data.TIMELINE_MAX_RANGE_DAYS)
    max_points = data.int_arg(
        request.args, "max_points", data.DEFAULT_MAX_POINTS, 10, data.MAX_POINTS_LIMIT
    )
    return jsonify(data.timeline(handles, farm, series, start, end, max_points))


@bp.get("/quake")
@role_required("viewer")
def quake() -> Any:
    """One earthquake's verdict (hit, miss, reaction cover, not monitored, not counted,
    not a target), its ±48 h window, lead-window band and the series to show."""
    handles = _handles()
    farm = data.farm_config(handles, request.args.get("farm"))
    return jsonify(quake_view(handles, farm, request.args.get("event") or ""))


@bp.get("/alarms")
@role_required("viewer")
def alarms() -> Any:
    """Alarms newest first; filters farm, state (open/closed), series, limit."""
    args = request.args
    farm = data.farm_config(_handles(), args.get("farm")).id if args.get("farm") else None
    state = args.get("state") or None
    if state not in (None, "open", "closed"):
        raise data.InputError("state: must be open or closed")
    series = data.check_series(args.get("series")) if args.get("series") else None
    limit = data.int_arg(args, "limit", 200, 1, 5000)
    rows = data.alarms_query(_handles(), farm, state, limit, series=series)
    return jsonify([a.to_dict() for a in rows])


@bp.get("/alarms/<int:alarm_id>")
@role_required("viewer")
def alarm(alarm_id: int) -> Any:
    """One alarm with reviews, lead-window quakes and reaction mask."""
    return jsonify(data.alarm_detail(_handles(), alarm_id))


@bp.get("/alarms/<int:alarm_id>/reviews")
@role_required("viewer")
def reviews(alarm_id: int) -> Any:
    """Reviews of one alarm, oldest first."""
    return jsonify(data.alarm_detail(_handles(), alarm_id)["reviews"])


@bp.post("/alarms/<int:alarm_id>/reviews")
@role_required("reviewer")
def add_review(alarm_id: int) -> Any:
    """Annotate an alarm: ``verdict`` (true/false/unsure) and ``comment``."""
    return jsonify(data.add_review(_handles(), g.user, alarm_id, _body())), 201


@bp.patch("/reviews/<int:review_id>")
@role_required("reviewer")
def change_review(review_id: int) -> Any:
    """Change one's own review (admins: any review)."""
    return jsonify(data.update_review(_handles(), g.user, review_id, _body()))


@bp.delete("/reviews/<int:review_id>")
@role_required("reviewer")
def delete_review(review_id: int) -> Any:
    """Delete one's own review (admins: any review)."""
    data.update_review(_handles(), g.user, review_id, {}, delete=True)
    return "", 204


@bp.get("/events")
@role_required("viewer")
def events() -> Any:
    """Farm events (housing, disturbances, storms, feeding changes) of a farm."""
    farm = data.farm_config(_handles(), request.args.get("farm"))
    return jsonify([e.to_dict() for e in data.farm_events(_handles(), farm.id)])


@bp.post("/events")
@role_required("reviewer")
def add_event() -> Any:
    """Record a farm event: farm, kind, start, end (optional), comment."""
    return jsonify(data.new_farm_event(_handles(), g.user, _body())), 201


@bp.get("/catalog")
@role_required("viewer")
def catalog() -> Any:
    """Catalogue events around a farm; filters start, end, min_magnitude, max_distance_km."""
    farm = data.farm_config(_handles(), request.args.get("farm"))
    return jsonify(data.catalog(_handles(), farm, request.args))


@bp.get("/evaluation")
@role_required("viewer")
@heavy
def evaluation() -> Any:
    """Skill of the alarms over a period (see ``namazu.server.web.evaluation``)."""
    from namazu.server.web.evaluation import evaluate_request

    return jsonify(evaluate_request(_handles(), request.args))


def _filename(*parts: str) -> str:
    return _SAFE_FILENAME.sub("_", "-".join(parts)).strip("._-")[:120] or "export"


@bp.get("/export/timeline.csv")
@role_required("viewer")
@heavy
def export_timeline() -> Any:
    """CSV of a timeline (time, series, kind = activity | baseline | threshold, value):
    every stored sample of the range, never downsampled (at most 400 days), streamed."""
    handles = _handles()
    farm = data.farm_config(handles, request.args.get("farm"))
    series = data.check_series(request.args.get("series"))
    start, end = data.time_range(request.args)
    pieces = exports.primed(exports.timeline_csv(handles, farm, series, start, end))
    name = _filename(farm.id, series.replace(":", "_"), "timeline") + ".csv"
    return _csv_download(pieces, name)


@bp.get("/export/movebank.csv")
@role_required("viewer")
@heavy
def export_movebank() -> Any:
    """Movebank-compatible CSV of one animal's activity over a range, streamed."""
    handles = _handles()
    farm = data.farm_config(handles, request.args.get("farm"))
    animal = data.check_id(request.args.get("animal"), "animal")
    start, end = data.time_range(request.args)
    pieces = exports.primed(exports.movebank_csv(handles, farm, animal, start, end))
    return _csv_download(pieces, _filename(farm.id, animal, "movebank") + ".csv")


def _csv_download(pieces: Any, name: str) -> Response:
    return Response(
        pieces,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


__all__ = ["bp"]
