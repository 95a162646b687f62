// Runs deploy/lorawan/namazu-codec.js on test vectors (JSON on stdin) and prints the
// results as JSON: what the network servers would produce with this codec.
const codec = require(process.argv[2]);
const vectors = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = {
  decoded: vectors.uplinks.map((hex) =>
    codec.decodeUplink({ bytes: Array.from(Buffer.from(hex, "hex")), fPort: 1, recvTime: new Date() })),
  wrong_port: codec.decodeUplink({ bytes: [1, 2, 3], fPort: 2 }),
  encoded: vectors.objects.map((obj) => Buffer.from(codec.encodeUplink(obj)).toString("hex")),
  downlinks: vectors.downlinks.map((d) => codec.encodeDownlink({ data: d })),
  downlinks_decoded: vectors.downlink_bytes.map((hex) =>
    codec.decodeDownlink({ bytes: Array.from(Buffer.from(hex, "hex")), fPort: 10 })),
};
process.stdout.write(JSON.stringify(out));
