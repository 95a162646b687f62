// Namazu collar payload codec for LoRaWAN network servers.
//
// One file for both: ChirpStack v4 (device profile > Codec > JavaScript functions)
// and The Things Stack v3 (application or end device > Payload formatters >
// Custom Javascript formatter, uplink and downlink). Both call the LoRaWAN payload
// codec API: decodeUplink(input), encodeDownlink(input), decodeDownlink(input).
// The format is specified in docs/lorawan.md; firmware_bridge/lorawan.py is the
// Python twin, and tests/firmware_bridge/test_lorawan_codec.py runs both on the
// same test vectors.
//
// Activity uplink, fPort 1, 13..49 bytes, big-endian:
//   0 version (1) | 1..4 base time [UTC epoch s] | 5..6 sequence number |
//   7 battery (0 = none, else 2.00 V + n x 0.01 V) | 8 configuration id |
//   then 1..10 x (ODBA, VeDBA) uint16 in 0.1 mg, one pair per minute.
// Interval downlink, fPort 10, 3 bytes: version (1) | interval [min] 1..10 | id 1..255.

// Plain ES5 (no let/const, arrow functions or Number.isInteger): The Things Stack's
// and ChirpStack's JavaScript engines both run it.

var UPLINK_FPORT = 1;
var DOWNLINK_FPORT = 10;

function isWhole(x, lo, hi) {
  return typeof x === "number" && Math.floor(x) === x && x >= lo && x <= hi;
}

function u16(bytes, i) {
  return (bytes[i] << 8) | bytes[i + 1];
}

function decodeActivity(bytes) {
  var n = bytes.length;
  if (n < 13 || n > 49 || (n - 9) % 4 !== 0) {
    throw new Error("uplink of " + n + " bytes; expected 9 + 4 x (1..10)");
  }
  if (bytes[0] !== 1) {
    throw new Error("uplink version " + bytes[0] + "; this decoder reads 1");
  }
  var base = ((bytes[1] * 16777216) + (bytes[2] << 16) + (bytes[3] << 8) + bytes[4]);
  var odba = [];
  var vedba = [];
  for (var i = 9; i < n; i += 4) {
    odba.push(u16(bytes, i) / 10000);
    vedba.push(u16(bytes, i + 2) / 10000);
  }
  return {
    version: 1,
    base_time_s: base,
    seq: u16(bytes, 5),
    battery_v: bytes[7] === 0 ? null : (200 + bytes[7]) / 100,
    config_id: bytes[8],
    interval_min: odba.length,
    odba_g: odba,
    vedba_g: vedba
  };
}

function decodeUplink(input) {
  if (input.fPort !== UPLINK_FPORT) {
    return { errors: ["uplink on fPort " + input.fPort + "; activity is on fPort 1"] };
  }
  try {
    return { data: decodeActivity(input.bytes) };
  } catch (e) {
    return { errors: [e.message] };
  }
}

function encodeDownlink(input) {
  var d = input.data || {};
  var interval = d.interval_min;
  var id = d.config_id;
  if (!isWhole(interval, 1, 10)) {
    return { errors: ["interval_min must be an integer 1..10"] };
  }
  if (!isWhole(id, 1, 255)) {
    return { errors: ["config_id must be an integer 1..255"] };
  }
  return { bytes: [1, interval, id], fPort: DOWNLINK_FPORT };
}

function decodeDownlink(input) {
  var b = input.bytes;
  if (input.fPort !== DOWNLINK_FPORT || b.length !== 3 || b[0] !== 1) {
    return { errors: ["not a Namazu interval downlink"] };
  }
  return { data: { interval_min: b[1], config_id: b[2] } };
}

// The collar side (reference for firmware and for the tests; network servers do not
// call it).
function units(g) {
  if (!(isFinite(g) && g >= 0)) {
    throw new Error("activity " + g + " g must be finite and >= 0");
  }
  return Math.min(65535, Math.round(g * 10000));
}

function encodeUplink(obj) {
  var n = obj.odba_g.length;
  if (n < 1 || n > 10 || obj.vedba_g.length !== n) {
    throw new Error("need 1..10 odba_g and as many vedba_g");
  }
  var battery = 0;
  if (obj.battery_v !== null && obj.battery_v !== undefined) {
    battery = Math.min(255, Math.max(1, Math.round((obj.battery_v - 2) * 100)));
  }
  var t = obj.base_time_s;
  var out = [1, Math.floor(t / 16777216) & 255, (t >>> 16) & 255, (t >>> 8) & 255, t & 255,
    (obj.seq >>> 8) & 255, obj.seq & 255, battery, obj.config_id];
  for (var i = 0; i < n; i++) {
    var o = units(obj.odba_g[i]);
    var v = units(obj.vedba_g[i]);
    out.push(o >>> 8, o & 255, v >>> 8, v & 255);
  }
  return out;
}

if (typeof module !== "undefined") {
  module.exports = {
    decodeUplink: decodeUplink,
    encodeDownlink: encodeDownlink,
    decodeDownlink: decodeDownlink,
    encodeUplink: encodeUplink
  };
}
