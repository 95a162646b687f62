"""The alarm list grouped by episode, with a review column and filters, and the alarm
page's review form, on a real InfluxDB and state store."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from namazu.server.store.models import Review, User
from namazu.server.store.state import Alarm, session_scope
from namazu.server.web.data import alarm_title
from tests.conftest import STATE_BACKENDS, fresh_state_store
from tests.server.web.conftest import build_panel, login
from tests.server.web.seed import FARM

NIGHT = pd.Timestamp("2024-03-05T01:00:00Z")


def _alarm(series: str, kind: str, species: str | None, start_min: int, minutes: int) -> Alarm:
    start = (NIGHT + pd.Timedelta(minutes=start_min)).to_pydatetime()
    end = (NIGHT + pd.Timedelta(minutes=start_min + minutes)).to_pydatetime()
    return Alarm(
        farm=FARM, series=series, kind=kind, species=species, start=start, end=end,
        last_anomalous=end, opened_at=start, state="closed", peak_ratio=3.0,
        rule_version="v1", params={}, animals_involved=[],
    )  # fmt: skip


@pytest.fixture(scope="module", params=STATE_BACKENDS)
def listed(stack, tmp_path_factory, request):
    """The seeded farm plus one night's episode (a herd alarm, a quorum alarm and three
    animal alarms) and, the next day, a lone sheep alarm; one cow alarm reviewed; the
    state store on each backend."""
    directory = tmp_path_factory.mktemp("alarms")
    with fresh_state_store(request, request.param, directory, migrated=True) as state_url:
        yield from _listed(build_panel(stack, directory, state_url=state_url))


def _listed(panel):
    engine = panel.app.extensions["namazu"].sessions
    with session_scope(engine) as db:
        rows = {
            "herd": _alarm("herd", "herd", None, 0, 120),
            "quorum": _alarm("herd", "quorum", None, 10, 60),
            "cow-a": _alarm("cow-a", "animal", "cow", 5, 90),
            "cow-b": _alarm("cow-b", "animal", "cow", 20, 40),
            "sheep-a": _alarm("sheep-a", "animal", "sheep", 30, 50),
            "sheep-late": _alarm("sheep-late", "animal", "sheep", 24 * 60, 60),
        }
        db.add_all(rows.values())
        db.flush()
        ids = {name: row.id for name, row in rows.items()}
    client = panel.app.test_client()
    assert login(client, "reviewer").status_code == 302
    with session_scope(engine) as db:
        reviewer = db.query(User).filter_by(name="reviewer").one()
        db.add(Review(alarm_id=ids["cow-a"], user_id=reviewer.id, user_name="reviewer",
                      verdict="false", comment="dog in the barn"))  # fmt: skip
    yield client, ids, panel
    panel.app.extensions["namazu"].influx.drop_database()
    panel.app.extensions["namazu"].influx.close()


def _episodes(html: str) -> list[list[str]]:
    """Per episode (tbody), the alarm links in order."""
    bodies = re.findall(r'<tbody class="episode">(.*?)</tbody>', html, re.S)
    return [re.findall(r'href="/alarms/(\d+)">#', body) for body in bodies]


def test_alarms_of_one_episode_are_listed_under_its_herd_alarm(listed):
    client, ids, _ = listed
    html = client.get("/alarms").get_data(as_text=True)
    episodes = _episodes(html)
    night = [e for e in episodes if str(ids["herd"]) in e]
    assert len(night) == 1
    # the herd alarm heads its episode; the others follow by start
    assert night[0] == [str(ids[n]) for n in ("herd", "cow-a", "quorum", "cow-b", "sheep-a")]
    assert [str(ids["sheep-late"])] in episodes
    assert "herd herd" not in html and "</span> herd quorum</td>" in html


def test_review_column_and_filters(listed):
    client, ids, panel = listed
    html = client.get("/alarms").get_data(as_text=True)
    row = re.search(rf'href="/alarms/{ids["cow-a"]}">#.*?</tr>', html, re.S).group(0)
    assert "verdict-false" in row and 'title="reviewer"' in row
    row = re.search(rf'href="/alarms/{ids["cow-b"]}">#.*?</tr>', html, re.S).group(0)
    assert f'href="/alarms/{ids["cow-b"]}#review">review</a>' in row

    sheep = _episodes(client.get("/alarms?species=sheep").get_data(as_text=True))
    # the night's episode keeps its herd alarm as context, shows only the sheep
    assert [str(ids["herd"]), str(ids["sheep-a"])] in sheep
    assert [str(ids["sheep-late"])] in sheep and len(sheep) == 2

    unreviewed_cows = client.get("/alarms?kind=animal&species=cow&review=none")
    assert _episodes(unreviewed_cows.get_data(as_text=True)) == [
        [str(panel.farm.alarm_id)],  # the seeded cow-1 alarm, days later: newest first
        [str(ids["herd"]), str(ids["cow-b"])],
    ]
    reviewed_false = _episodes(client.get("/alarms?review=false").get_data(as_text=True))
    assert reviewed_false == [[str(ids["herd"]), str(ids["cow-a"])]]
    quorum = _episodes(client.get("/alarms?kind=quorum").get_data(as_text=True))
    assert quorum == [[str(ids["herd"]), str(ids["quorum"])]]

    bad = client.get("/alarms?kind=goat")
    assert bad.status_code == 400 and "kind: must be one of" in bad.get_data(as_text=True)


def test_review_form_has_no_preselected_verdict(listed):
    client, ids, _ = listed
    html = client.get(f"/alarms/{ids['cow-b']}").get_data(as_text=True)
    form = re.search(r'<form[^>]*id="review".*?</form>', html, re.S).group(0)
    assert '<option value="" selected disabled>' in form and "required" in form
    assert re.findall(r"<option[^>]*selected", form) == ['<option value="" selected']
    assert "<h1>Alarm #" in html and "animal cow-b" in html


def test_titles_never_repeat_a_word():
    assert alarm_title("herd", "herd") == "herd"
    assert alarm_title("quorum", "herd") == "herd quorum"
    assert alarm_title("species", "species:sheep") == "sheep (species)"
    assert alarm_title("animal", "cow-7") == "animal cow-7"
