#!/bin/sh
# First start of the influxdb:2 container (docker-entrypoint-initdb.d): the long-term
# bucket, the DBRP mappings Namazu's v1 reads and writes go through, the downsampling
# task and a read-only v1 authorisation for Grafana. NOT RUN HERE: no 2.x server can
# run where Namazu is tested; see docs/deployment.md, "InfluxDB 2.x".
set -eu
org="$DOCKER_INFLUXDB_INIT_ORG"
influx bucket create --org "$org" --name namazu_forever --retention 0
raw_id=$(influx bucket list --org "$org" --name namazu --hide-headers | cut -f1)
forever_id=$(influx bucket list --org "$org" --name namazu_forever --hide-headers | cut -f1)
influx v1 dbrp create --org "$org" --db namazu --rp raw --default --bucket-id "$raw_id"
influx v1 dbrp create --org "$org" --db namazu --rp forever --bucket-id "$forever_id"
influx task create --org "$org" --file /docker-entrypoint-initdb.d/activity_1m.flux
influx v1 auth create --org "$org" --username grafana \
    --password "$NAMAZU_GRAFANA_INFLUX_PASSWORD" \
    --read-bucket "$raw_id" --read-bucket "$forever_id"
