"""The shipped Mosquitto security config on a real broker: no anonymous access, each
gateway confined to its own subtree, alarms only from the server account, TLS works.

A denied publish is silently dropped for MQTT 3.1.1 clients, so each "must not
arrive" check publishes an allowed control message on the same connection right
after the forbidden one: the control arriving proves the subscriber was listening
and that the forbidden message, sent before it, had its chance to be delivered.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from tests.deploy.conftest import PASSWORDS, connect

pytestmark = pytest.mark.services

NOT_AUTHORIZED_V5 = 0x87  # CONNACK / PUBACK reason "Not authorized"
BAD_CREDENTIALS_V5 = 0x86  # CONNACK reason "Bad user name or password"
SETTLE_S = 0.3
NO_MATCHING_SUBSCRIBERS_V5 = 0x10  # PUBACK success: accepted, nobody listening


def _login(broker, user: str, **kwargs):
    client = connect(broker.plain_port, user, PASSWORDS[user], **kwargs)
    assert client.reason_code == 0, f"{user} could not log in: {client.reason_code}"
    return client


@pytest.fixture
def monitor(secure_broker):
    client = _login(secure_broker, "namazu-monitor")
    granted = client.subscribe("namazu/v1/#")
    assert granted == [1]
    yield client
    client.close()


def _assert_refused_but_control_arrives(monitor, publisher, forbidden: str, control: str):
    publisher.publish(forbidden, b'{"forged": true}')
    publisher.publish(control, b"{}")
    assert monitor.wait_for_topic(control), f"control message on {control} never arrived"
    time.sleep(SETTLE_S)
    assert forbidden not in monitor.topics(), f"{forbidden} was delivered"


@pytest.mark.parametrize(
    "protocol", [mqtt.MQTTProtocolVersion.MQTTv311, mqtt.MQTTProtocolVersion.MQTTv5]
)
def test_anonymous_connection_is_refused(secure_broker, protocol):
    client = connect(secure_broker.plain_port, protocol=protocol)
    assert client.reason_code not in (None, 0)
    if protocol == mqtt.MQTTProtocolVersion.MQTTv5:
        assert client.reason_code == NOT_AUTHORIZED_V5


def test_wrong_password_is_refused(secure_broker):
    client = connect(secure_broker.plain_port, "farmA/gw1", "not-the-password")
    assert client.reason_code in (BAD_CREDENTIALS_V5, NOT_AUTHORIZED_V5)
    assert _login(secure_broker, "farmA/gw1").reason_code == 0


def test_gateway_publishes_its_own_subtree(secure_broker, monitor):
    gateway = _login(secure_broker, "farmA/gw1")
    try:
        for leaf in ("activity", "raw", "status"):
            topic = f"namazu/v1/farmA/gw1/{leaf}"
            assert gateway.publish(topic) == 0
            assert monitor.wait_for_topic(topic), f"{topic} not delivered"
    finally:
        gateway.close()


@pytest.mark.parametrize(
    "forbidden",
    [
        "namazu/v1/farmB/gw1/activity",  # another farm's gateway
        "namazu/v1/farmA/gw2/activity",  # another gateway of the same farm
        "namazu/v1/farmA/gw1/other",  # not a contract topic
        "namazu/v1/deadletter/farmA/gw1",  # forged dead letter
        "namazu/v1/_ingest/alive",  # forged ingest heartbeat: would open the gates
        "namazu/v1/farmA/gw1/receipt",  # forged receipt: would free unstored data
    ],
)
def test_gateway_cannot_publish_outside_its_subtree_v311(secure_broker, monitor, forbidden):
    gateway = _login(secure_broker, "farmA/gw1", protocol=mqtt.MQTTProtocolVersion.MQTTv311)
    try:
        _assert_refused_but_control_arrives(
            monitor, gateway, forbidden, "namazu/v1/farmA/gw1/activity"
        )
    finally:
        gateway.close()


def test_gateway_publish_into_other_farm_gets_not_authorized_puback_v5(secure_broker):
    gateway = _login(secure_broker, "farmA/gw1")
    try:
        assert gateway.publish("namazu/v1/farmB/gw1/activity") == NOT_AUTHORIZED_V5
        accepted = gateway.publish("namazu/v1/farmA/gw1/activity")
        assert accepted in (0, NO_MATCHING_SUBSCRIBERS_V5)
    finally:
        gateway.close()


def test_gateway_forged_heartbeat_gets_not_authorized_puback_v5(secure_broker):
    gateway = _login(secure_broker, "farmA/gw1")
    try:
        assert gateway.publish("namazu/v1/_ingest/alive") == NOT_AUTHORIZED_V5
    finally:
        gateway.close()


def test_gateway_receives_the_ingest_heartbeat(secure_broker):
    gateway = _login(secure_broker, "farmA/gw1")
    ingest = _login(secure_broker, "namazu-ingest")
    try:
        assert gateway.subscribe("namazu/v1/_ingest/alive") == [1]
        assert ingest.publish("namazu/v1/_ingest/alive", b'{"client_id": "i1"}') == 0
        assert gateway.wait_for_topic("namazu/v1/_ingest/alive")
    finally:
        ingest.close()
        gateway.close()


def test_gateway_receives_its_own_receipts_and_no_other(secure_broker):
    gateway = _login(secure_broker, "farmA/gw1")
    ingest = _login(secure_broker, "namazu-ingest")
    try:
        assert gateway.subscribe("namazu/v1/farmA/gw1/receipt") == [1]
        gateway.subscribe("namazu/v1/farmA/gw2/receipt")  # granted or not: never delivered
        assert ingest.publish("namazu/v1/farmA/gw2/receipt", b'{"seqs": [[1, 9]]}') == 0
        assert ingest.publish("namazu/v1/farmA/gw1/receipt", b'{"seqs": [[1, 5]]}') == 0
        assert gateway.wait_for_topic("namazu/v1/farmA/gw1/receipt")
        time.sleep(SETTLE_S)
        assert gateway.topics() == ["namazu/v1/farmA/gw1/receipt"]
    finally:
        ingest.close()
        gateway.close()


def test_gateway_cannot_subscribe_to_other_farms(secure_broker):
    gateway = _login(secure_broker, "farmB/gw1")
    try:
        granted = gateway.subscribe("namazu/v1/farmA/#")
        publisher = _login(secure_broker, "farmA/gw1")
        try:
            publisher.publish("namazu/v1/farmA/gw1/activity")
            time.sleep(SETTLE_S)
        finally:
            publisher.close()
        assert granted == [NOT_AUTHORIZED_V5] or gateway.topics() == []
        assert gateway.topics() == []
    finally:
        gateway.close()


@pytest.mark.parametrize("user", ["farmA/gw1", "namazu-ingest"])
def test_forged_alarm_is_not_delivered(secure_broker, monitor, user):
    control = "namazu/v1/farmA/gw1/activity" if "/" in user else "namazu/v1/deadletter/farmA/gw1"
    publisher = _login(secure_broker, user, protocol=mqtt.MQTTProtocolVersion.MQTTv311)
    try:
        _assert_refused_but_control_arrives(monitor, publisher, "namazu/v1/farmA/alarms", control)
    finally:
        publisher.close()


def test_forged_alarm_gets_not_authorized_puback_v5(secure_broker):
    ingest = _login(secure_broker, "namazu-ingest")
    try:
        assert ingest.publish("namazu/v1/farmA/alarms") == NOT_AUTHORIZED_V5
    finally:
        ingest.close()


def test_server_account_publishes_alarms(secure_broker, monitor):
    server = _login(secure_broker, "namazu-server")
    try:
        assert server.publish("namazu/v1/farmA/alarms", b'{"state": "open"}') == 0
        assert monitor.wait_for_topic("namazu/v1/farmA/alarms")
    finally:
        server.close()


def test_ingest_receives_activity_through_its_shared_subscription(secure_broker):
    ingest = _login(secure_broker, "namazu-ingest", client_id="namazu-ingest-test")
    try:
        granted = ingest.subscribe("$share/namazu-ingest/namazu/v1/+/+/activity")
        assert granted == [1]
        gateway = _login(secure_broker, "farmB/gw1")
        try:
            gateway.publish("namazu/v1/farmB/gw1/activity", b'{"seq": 1}')
        finally:
            gateway.close()
        assert ingest.wait_for_topic("namazu/v1/farmB/gw1/activity")
    finally:
        ingest.close()


def test_tls_listener_accepts_a_gateway_that_trusts_the_ca(secure_broker, monitor):
    gateway = connect(
        secure_broker.tls_port,
        "farmA/gw1",
        PASSWORDS["farmA/gw1"],
        tls=True,
        ca_file=secure_broker.ca_file,
    )
    assert gateway.reason_code == 0
    try:
        gateway.publish("namazu/v1/farmA/gw1/status", b'{"online": true}')
        assert monitor.wait_for_topic("namazu/v1/farmA/gw1/status")
    finally:
        gateway.close()


def test_tls_listener_is_not_trusted_without_the_ca(secure_broker):
    client = connect(
        secure_broker.tls_port, "farmA/gw1", PASSWORDS["farmA/gw1"], tls=True, ca_file=None
    )
    assert client.reason_code is None  # certificate verification failed in the handshake


def test_tls_listener_still_requires_a_password(secure_broker):
    client = connect(secure_broker.tls_port, tls=True, ca_file=secure_broker.ca_file)
    assert client.reason_code == NOT_AUTHORIZED_V5


def test_replay_account_republishes_to_any_gateway_and_nothing_else(secure_broker, monitor):
    """``namazu deadletter replay`` runs as namazu-replay: it may send archived originals
    to any gateway's activity and status topics, never receipts, dead letters, the
    ingest heartbeat or alarms."""
    replay = _login(secure_broker, "namazu-replay", protocol=mqtt.MQTTProtocolVersion.MQTTv311)
    try:
        for topic in ("namazu/v1/farmB/gw1/activity", "namazu/v1/farmA/gw1/status"):
            assert replay.publish(topic) == 0
            assert monitor.wait_for_topic(topic), f"{topic} not delivered"
        for forbidden in (
            "namazu/v1/farmA/gw1/receipt",
            "namazu/v1/deadletter/farmA/gw1",
            "namazu/v1/_ingest/alive",
            "namazu/v1/farmA/alarms",
        ):
            _assert_refused_but_control_arrives(
                monitor, replay, forbidden, "namazu/v1/farmA/gw2/activity"
            )
    finally:
        replay.close()
