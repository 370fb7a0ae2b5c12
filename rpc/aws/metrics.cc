#include "rpc/aws/metrics.h"

#include <cinttypes>
#include <cstdio>
#include <initializer_list>
#include <string_view>

namespace tw::rpc::aws {

namespace {

// A Prometheus label value: backslash, double quote and newline escaped.
std::string Label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out.append("\\n");
      continue;
    }
    out.push_back(c);
  }
  return out;
}

class Writer {
 public:
  void Header(const char* name, const char* type, const char* help) {
    out_.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
  }
  // A metric with one unlabelled sample.
  template <typename Value>
  void Metric(const char* name, const char* type, const char* help, Value value) {
    Header(name, type, help);
    Sample(name, "", value);
  }
  void Sample(const std::string& name, const std::string& labels, double value) {
    out_.append(name);
    if (!labels.empty()) out_.append("{").append(labels).append("}");
    char buf[64];
    std::snprintf(buf, sizeof(buf), " %.17g\n", value);
    out_.append(buf);
  }
  void Sample(const std::string& name, const std::string& labels, uint64_t value) {
    out_.append(name);
    if (!labels.empty()) out_.append("{").append(labels).append("}");
    out_.append(" ").append(std::to_string(value)).append("\n");
  }
  // A histogram from LatencyBuckets counts, at Prometheus bounds `le` (in the counts' unit),
  // reported divided by `scale` (1e6: microseconds as seconds). A bucket is counted under the
  // first bound its upper end does not exceed, so the histogram errs on the slow side by at
  // most a bucket's width (25%).
  void Histogram(const std::string& name, const std::string& labels,
                 const LatencyBuckets::Counts& counts, std::initializer_list<uint64_t> le,
                 double scale) {
    const std::string sep = labels.empty() ? "" : ",";
    uint64_t total = 0;
    double sum = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      total += counts[i];
      sum += static_cast<double>(counts[i]) * static_cast<double>(LatencyBuckets::LowerBound(i));
    }
    for (uint64_t bound : le) {
      uint64_t below = 0;
      for (size_t i = 0; i < counts.size(); ++i) {
        if (LatencyBuckets::UpperBound(i) - 1 <= bound) below += counts[i];
      }
      char b[32];
      std::snprintf(b, sizeof(b), "%.17g", static_cast<double>(bound) / scale);
      Sample(name + "_bucket", labels + sep + "le=\"" + b + "\"", below);
    }
    Sample(name + "_bucket", labels + sep + "le=\"+Inf\"", total);
    Sample(name + "_sum", labels, sum / scale);
    Sample(name + "_count", labels, total);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

constexpr std::initializer_list<uint64_t> kLatencyBoundsUs = {
    100,     250,     500,     1'000,     2'500,     5'000,     10'000,     25'000,     50'000,
    100'000, 250'000, 500'000, 1'000'000, 2'500'000, 5'000'000, 10'000'000, 30'000'000, 60'000'000};
constexpr std::initializer_list<uint64_t> kBatchBounds = {1,   2,   4,   8,    16,   32,  64,
                                                          128, 256, 512, 1024, 2048, 4096};

// Counted since the store opened: a reopen after a storage failure starts them from zero, which
// Prometheus's rate() reads as a counter reset.
void StoreMetrics(const StoreStats& s, Writer& w) {
  w.Header("tokenwheel_wal_sync_seconds", "histogram",
           "Time of each write-ahead log sync (the fsync a durable group commit waits for).");
  w.Histogram("tokenwheel_wal_sync_seconds", "", s.wal_sync_us, kLatencyBoundsUs, 1e6);
  w.Header("tokenwheel_rocksdb_write_stalls_total", "counter",
           "Times RocksDB began to delay or stop writes because flushes or compactions fell "
           "behind.");
  w.Sample("tokenwheel_rocksdb_write_stalls_total", "condition=\"delayed\"",
           s.write_stalls_delayed);
  w.Sample("tokenwheel_rocksdb_write_stalls_total", "condition=\"stopped\"",
           s.write_stalls_stopped);
  w.Metric("tokenwheel_rocksdb_write_stall_seconds_total", "counter",
           "Time with writes delayed or stopped.", static_cast<double>(s.write_stall_us) / 1e6);
  w.Metric("tokenwheel_rocksdb_flushes_total", "counter", "Memtable flushes finished.", s.flushes);
  w.Metric("tokenwheel_rocksdb_compactions_total", "counter", "Compactions finished.",
           s.compactions);
  w.Metric("tokenwheel_rocksdb_compaction_read_bytes_total", "counter", "Bytes compactions read.",
           s.compaction_read_bytes);
  w.Metric("tokenwheel_rocksdb_compaction_written_bytes_total", "counter",
           "Bytes compactions wrote.", s.compaction_write_bytes);
}

void EngineMetrics(const EngineStats& s, Writer& w) {
  w.Metric("tokenwheel_live_tasks", "gauge", "Tasks SCHEDULED or STARTED.", s.live_tasks);
  w.Metric("tokenwheel_pending_timers", "gauge", "Timers armed in the timing wheel.",
           s.pending_timers);
  w.Metric("tokenwheel_waiting_polls", "gauge", "GetActivityTask calls waiting in the engine.",
           s.waiting_polls);
  w.Header("tokenwheel_queued_tasks", "gauge", "SCHEDULED tasks waiting, per activity.");
  for (const ActivityCounts& a : s.per_activity) {
    w.Sample("tokenwheel_queued_tasks", "activity=\"" + Label(a.arn) + "\"", a.queued);
  }
  w.Header("tokenwheel_started_tasks", "gauge",
           "STARTED tasks (handed to a worker, not ended), per activity.");
  for (const ActivityCounts& a : s.per_activity) {
    w.Sample("tokenwheel_started_tasks", "activity=\"" + Label(a.arn) + "\"", a.started);
  }
  w.Header("tokenwheel_timeouts_total", "counter", "Tasks timed out, by the clock that fired.");
  for (TimeoutKind k :
       {TimeoutKind::kHeartbeat, TimeoutKind::kOverall, TimeoutKind::kScheduleToStart}) {
    w.Sample("tokenwheel_timeouts_total", std::string("clock=\"") + TimeoutKindName(k) + "\"",
             s.timeouts[static_cast<size_t>(k)]);
  }
  w.Metric("tokenwheel_events_last_sequence", "gauge", "The last durable outcome event.",
           s.last_event_seq);
  w.Metric("tokenwheel_events_not_acked", "gauge",
           "Outcome events the slowest consumer has not acknowledged.", s.events_not_acked);
  w.Header("tokenwheel_consumer_events_not_acked", "gauge",
           "Outcome events a consumer has not acknowledged, per consumer.");
  for (const ConsumerInfo& c : s.consumers) {
    const uint64_t lag = s.last_event_seq > c.acked_seq ? s.last_event_seq - c.acked_seq : 0;
    w.Sample("tokenwheel_consumer_events_not_acked", "consumer=\"" + Label(c.name) + "\"", lag);
  }
  w.Metric("tokenwheel_engine_commands_total", "counter", "Commands the engine applied.",
           s.commands);
  w.Metric("tokenwheel_engine_queue_depth", "gauge", "Commands waiting for the engine thread.",
           s.queue_depth);
  w.Metric("tokenwheel_engine_queue_capacity", "gauge",
           "The bound of the engine's command queue; past it calls are refused as overloaded.",
           s.queue_max);
  w.Metric("tokenwheel_engine_queue_refusals_total", "counter",
           "Calls refused because the engine's command queue was full.", s.queue_refusals);
  w.Header("tokenwheel_engine_batch_commands", "histogram", "Commands per group commit.");
  w.Histogram("tokenwheel_engine_batch_commands", "", s.batch_commands, kBatchBounds, 1);
  w.Header("tokenwheel_engine_commit_seconds", "histogram",
           "Group commit write and WAL sync time.");
  w.Histogram("tokenwheel_engine_commit_seconds", "", s.commit_latency_us, kLatencyBoundsUs, 1e6);
  w.Header("tokenwheel_timer_lateness_seconds", "histogram",
           "How late each timeout fired after its deadline (engine clock, 1 ms resolution).");
  w.Histogram("tokenwheel_timer_lateness_seconds", "", s.timer_lateness_us, kLatencyBoundsUs, 1e6);
  StoreMetrics(s.store, w);
  w.Metric("tokenwheel_storage_ok", "gauge", "1 while the storage works, 0 after a failure.",
           uint64_t{s.storage.ok ? 1u : 0u});
  w.Metric("tokenwheel_storage_failures_total", "counter", "Storage failures.", s.storage.failures);
  w.Metric("tokenwheel_storage_recoveries_total", "counter", "Reopens after a storage failure.",
           s.storage.recoveries);
}

void GatewayMetrics(const GatewayCounters& g, Writer& w) {
  w.Header("tokenwheel_gateway_requests_total", "counter",
           "Requests answered, by operation and AWS error code (code=\"\" for success).");
  for (const auto& [key, n] : g.requests) {
    w.Sample(
        "tokenwheel_gateway_requests_total",
        std::string("operation=\"") + OpName(key.first) + "\",code=\"" + Label(key.second) + "\"",
        n);
  }
  w.Header("tokenwheel_gateway_rejected_total", "counter",
           "Requests refused before an operation was known, by code.");
  for (const auto& [code, n] : g.rejected) {
    w.Sample("tokenwheel_gateway_rejected_total", "code=\"" + Label(code) + "\"", n);
  }
  w.Header("tokenwheel_gateway_request_seconds", "histogram",
           "Time from a request's last byte to its answer, by operation.");
  for (size_t i = 0; i < kOpCount; ++i) {
    if (LatencyCount(g.latency_us[i]) == 0) continue;
    w.Histogram("tokenwheel_gateway_request_seconds",
                std::string("operation=\"") + OpName(static_cast<Op>(i)) + "\"", g.latency_us[i],
                kLatencyBoundsUs, 1e6);
  }
  w.Metric("tokenwheel_gateway_connections", "gauge", "Open connections.", g.connections);
  w.Metric("tokenwheel_gateway_connections_total", "counter", "Connections accepted.",
           g.connections_accepted);
  w.Metric("tokenwheel_gateway_connections_refused_total", "counter",
           "Connections refused past the connection cap.", g.connections_refused);
  w.Metric("tokenwheel_gateway_waiting_polls", "gauge",
           "GetActivityTask and GetOutcomes calls waiting.", g.waiting_polls);
  w.Metric("tokenwheel_gateway_calls_in_flight", "gauge", "Engine calls not yet answered.",
           g.calls_in_flight);
  w.Metric("tokenwheel_gateway_tasks_returned_total", "counter",
           "Tasks put back in their queue because their poll's answer could not be written.",
           g.tasks_returned);
  w.Metric("tokenwheel_gateway_accept_backoffs_total", "counter",
           "Times the accept loop backed off for lack of file descriptors.", g.accept_backoffs);
}

void RpcMetrics(const RpcCounters& r, Writer& w) {
  w.Header("tokenwheel_rpc_requests_total", "counter",
           "Cap'n Proto calls answered, by method and AWS error code (code=\"\" for success; a "
           "batch call counts once).");
  for (const auto& [key, n] : r.calls) {
    w.Sample("tokenwheel_rpc_requests_total",
             "method=\"" + Label(key.first) + "\",code=\"" + Label(key.second) + "\"", n);
  }
  w.Header("tokenwheel_rpc_request_seconds", "histogram",
           "Time from a Cap'n Proto call's arrival to its answer, by method.");
  for (const auto& [method, h] : r.latency_us) {
    w.Histogram("tokenwheel_rpc_request_seconds", "method=\"" + Label(method) + "\"", h,
                kLatencyBoundsUs, 1e6);
  }
  w.Metric("tokenwheel_rpc_overloaded_total", "counter",
           "Cap'n Proto single calls refused OVERLOADED before reaching the engine.", r.overloaded);
}

}  // namespace

std::string RenderMetrics(const EngineStats& engine, const GatewayCounters& gateway,
                          const std::optional<RpcCounters>& rpc) {
  Writer w;
  EngineMetrics(engine, w);
  GatewayMetrics(gateway, w);
  if (rpc) RpcMetrics(*rpc, w);
  return w.Take();
}

}  // namespace tw::rpc::aws
