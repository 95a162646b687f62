// InfluxDB 2.x task replacing the 1.x continuous query cq_activity_1m (retention.iql):
// every minute, over the last hour (late gateway replays are folded in), the 1-minute
// means of odba and vedba [g] and the number of samples, per series, stamped at the
// start of each minute, into measurement activity_1m of the bucket namazu_forever
// (DBRP namazu/forever). NOT RUN HERE: no 2.x server can run where Namazu is tested.
option task = {name: "namazu activity_1m", every: 1m, offset: 10s}

activity =
    from(bucket: "namazu")
        |> range(start: -1h)
        |> filter(fn: (r) => r._measurement == "activity")

means =
    activity
        |> filter(fn: (r) => r._field == "odba" or r._field == "vedba")
        |> aggregateWindow(every: 1m, fn: mean, timeSrc: "_start", createEmpty: false)

samples =
    activity
        |> filter(fn: (r) => r._field == "odba")
        |> aggregateWindow(every: 1m, fn: count, timeSrc: "_start", createEmpty: false)
        |> set(key: "_field", value: "samples")

union(tables: [means, samples])
    |> set(key: "_measurement", value: "activity_1m")
    |> to(bucket: "namazu_forever")
