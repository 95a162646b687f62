"""Admin page for LoRaWAN collars: the device registry and reporting-interval changes.

The registry is a file (``web.lorawan_registry``, default ``var/lorawan/devices.toml``);
``namazu bridge --source chirpstack|tts --registry`` that file reads it again when it
changes. An interval change
is written to ``interval-requests.json`` beside it; the bridge sends the downlink and
records in ``interval-status.json`` when it was sent, when the network server reported
the collar's radio acknowledgement and when the collar's first uplink with the new
configuration arrived (its confirmation). The page shows both files; the bridge and the
panel must share that folder (one host, or a shared volume).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from namazu.firmware_bridge.lorawan import (
    REQUESTS_FILE,
    STATUS_FILE,
    IntervalRequest,
    LorawanError,
    format_interval_requests,
    next_config_id,
    parse_device,
    parse_interval_requests,
    read_interval_status,
    read_registry,
    write_atomically,
    write_registry,
)
from namazu.server.web.auth import role_required

bp = Blueprint("lorawan", __name__)


def registry_path() -> Path:
    """The registry file the panel edits."""
    return Path(current_app.extensions["namazu"].config.web.lorawan_registry)


def _when(ms: Any) -> str:
    if not isinstance(ms, int):
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _read_requests(path: Path) -> dict[str, IntervalRequest]:
    requests_path = path.with_name(REQUESTS_FILE)
    if not requests_path.exists():
        return {}
    return parse_interval_requests(requests_path.read_text("utf-8"))


def _change(path: Path, requests: dict[str, IntervalRequest]) -> None:
    action = request.form.get("action")
    devices = read_registry(path)
    dev_eui = request.form.get("dev_eui", "").strip().upper()
    if action == "add":
        entry = {k: request.form.get(k, "").strip() for k in ("farm", "animal", "species")}
        device = parse_device(entry | {"dev_eui": dev_eui}, "the new device")
        if device.dev_eui in devices:
            raise LorawanError("bad_registry", f"DevEUI {device.dev_eui} is already registered")
        devices[device.dev_eui] = device
        write_registry(path, devices.values())
        flash(f"collar {device.dev_eui} added")
    elif action == "remove":
        if devices.pop(dev_eui, None) is None:
            raise LorawanError("bad_registry", f"DevEUI {dev_eui[:16]!r} is not registered")
        write_registry(path, devices.values())
        flash(f"collar {dev_eui} removed")
    elif action == "interval":
        if dev_eui not in devices:
            raise LorawanError("bad_registry", f"DevEUI {dev_eui[:16]!r} is not registered")
        try:
            minutes = int(request.form.get("interval_min", ""))
        except ValueError:
            minutes = 0
        if not 1 <= minutes <= 10:
            raise LorawanError("bad_value", "the reporting interval is 1..10 minutes")
        requests[dev_eui] = IntervalRequest(
            dev_eui,
            minutes,
            next_config_id(requests.get(dev_eui)),
            time.time_ns() // 1_000_000,
            g.user.name,
        )
        write_atomically(path.with_name(REQUESTS_FILE), format_interval_requests(requests.values()))
        flash(f"collar {dev_eui}: reporting every {minutes} min requested")
    else:
        raise LorawanError("bad_action", "unknown action")


@bp.route("/admin/lorawan", methods=["GET", "POST"])
@role_required("admin")
def collars() -> Any:
    """Admins: list the LoRaWAN collars, add or remove one, change its reporting interval
    and see when the collar confirmed it."""
    path = registry_path()
    error = None
    if request.method == "POST":
        try:
            _change(path, _read_requests(path))
            return redirect(url_for("lorawan.collars"))
        except LorawanError as exc:
            error = exc.detail
    devices: dict = {}
    requests: dict = {}
    try:
        devices = read_registry(path)
        requests = _read_requests(path)
    except LorawanError as exc:
        error = error or exc.detail
    status = read_interval_status(path.with_name(STATUS_FILE))
    rows = []
    for device in sorted(devices.values(), key=lambda d: (d.farm, d.animal)):
        asked = requests.get(device.dev_eui)
        state = status.get(device.dev_eui, {})
        same = asked is not None and state.get("config_id") == asked.config_id
        rows.append(
            {
                "device": device,
                "requested": f"{asked.interval_min} min at {_when(asked.requested_at)} UTC"
                if asked
                else "",
                "sent": _when(state.get("sent_at")) if same else "",
                "radio_ack": _when(state.get("radio_ack_at")) if same else "",
                "confirmed": _when(state.get("confirmed_at")) if same else "",
            }
        )
    page = render_template(
        "lorawan.html", rows=rows, error=error, path=path, species=("cow", "sheep", "dog")
    )
    return page, 400 if error else 200
