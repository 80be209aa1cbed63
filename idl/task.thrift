// task runs work that must not block a send: pushes that could not be published
// right away are handed over here and retried with backoff.
namespace go taskapi

struct DeferPushReq {
    1: string topic
    2: binary key
    3: binary value
    4: i64 deadline_ms // give up after this unix-millisecond time
}
struct DeferPushResp {}

struct StatsReq {}
struct StatsResp {
    1: i64 pending
    2: i64 delivered
    3: i64 dropped
}

service TaskService {
    DeferPushResp DeferPush(1: DeferPushReq req)
    StatsResp Stats(1: StatsReq req)
}
