// The network log's costs: one decision handed over on an I/O thread (the
// only part on the request path), the writer thread's throughput to a real
// file, and the reader's summary throughput. Baseline in the same run:
// formatting the same record with Boost.JSON's serializer alone, no file.
//
//   build/release/bench/log_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <filesystem>
#include <thread>

#include "sandgate/config/policy_file.h"
#include "sandgate/netlog/reader.h"
#include "sandgate/netlog/writer.h"

namespace {

namespace fs = std::filesystem;
namespace nl = sandgate::netlog;

fs::path bench_dir() {
  auto d = fs::temp_directory_path() / ("sandgate-log-bench-" + std::to_string(::getpid()));
  fs::create_directories(d / "log");
  return d;
}

std::shared_ptr<const sandgate::config::PolicySet> bench_policy() {
  static auto set = std::make_shared<const sandgate::config::PolicySet>(*sandgate::config::load_policy_text(
      "version: 1\nmode: deny\nallow_hosts:\n  - \"*.example.com\"\n", "bench.yaml",
      sandgate::config::Format::yaml));
  return set;
}

nl::WriterConfig bench_config(const fs::path& dir) {
  nl::WriterConfig c;
  c.path = (dir / "log" / "network.jsonl").string();
  c.key_file = (dir / "log.key").string();
  c.max_file_bytes = 0;
  c.queue_slots = 1 << 16;
  return c;
}

// What the proxy does per request: claim, fill, publish. On a full ring
// the proxy's I/O thread waits 1 ms on a timer (back-pressure); so does this
// one, rather than spin on a core the writer's threads need.
void fill(nl::Producer& p, const nl::Source* src, const std::shared_ptr<const sandgate::config::PolicySet>& set,
          const sandgate::policy::Target& target, std::uint64_t i) {
  nl::Event* e;
  while (!(e = p.claim())) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  e->kind = nl::Event::Kind::decision;
  e->id = p.next_id();
  e->time_us = 1'800'000'000'000'000 + static_cast<std::int64_t>(i);
  e->source = src;
  e->client = sandgate::policy::Address::from_v4(0x7f000001);
  e->client_port = 40000;
  e->client_is_ip = true;
  e->proxy_type = nl::ProxyType::connect;
  e->method.assign("");
  e->requested.assign("api.example.com:443");
  e->host.assign(target.host);
  e->port = target.port;
  e->address_count = 1;
  e->addresses[0] = sandgate::policy::Address::from_v4(0x5db8d822);
  e->has_used = true;
  e->used = e->addresses[0];
  e->decided = true;
  e->decision = set->default_policy->check_host(target);
  e->policy_set = set;
  e->policy = set->default_policy.get();
  e->status = 200;
  e->error = nullptr;
  e->dns_us = 120;
  e->connect_us = 250;
  p.publish();
}

// The I/O thread's cost of logging one decision, the writer draining meanwhile.
void BM_EnqueueDecision(benchmark::State& state) {
  const auto dir = bench_dir();
  // The proxy's ring (--log-queue's default), filled half way between
  // drains: the slots a request fills are the ones the writer read last.
  auto config = bench_config(dir);
  config.queue_slots = nl::WriterConfig{}.queue_slots;
  auto w = *nl::Writer::open(config, 1);
  const auto* src = w->add_source("agent1", "127.0.0.1:3128");
  const auto set = bench_policy();
  const auto target = *sandgate::policy::parse_target("api.example.com:443", std::nullopt);
  std::uint64_t i = 0;
  auto& p = w->producer(0);
  const std::uint64_t batch = config.queue_slots / 2;
  for (auto _ : state) {
    fill(p, src, set, target, ++i);
    // Measure the hand-over only: let the writer catch up outside the timing.
    if (i % batch == 0) {
      state.PauseTiming();
      w->wake();  // rather than wait for its flush interval
      while (p.depth() > 0) std::this_thread::yield();
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
  w.reset();
  fs::remove_all(dir);
}
BENCHMARK(BM_EnqueueDecision)->Unit(benchmark::kNanosecond);

// Records per second from enqueue to file: formatting, SHA-256 chain,
// write(2), with the syncer's fdatasync every second running alongside.
// Timed until the last record is written; the stop that follows (a final
// checkpoint and an fsync of all not yet synced) is counted apart as
// stop_ms, since it measures the disk (a few hundred MB/s here) rather than
// the writer, and with_stop_per_second includes it.
void BM_WriterThroughput(benchmark::State& state) {
  const auto records = static_cast<std::uint64_t>(state.range(0));
  const auto set = bench_policy();
  const auto target = *sandgate::policy::parse_target("api.example.com:443", std::nullopt);
  std::uint64_t bytes = 0;
  std::chrono::duration<double> written{}, stopping{};
  for (auto _ : state) {
    const auto dir = bench_dir();
    const auto config = bench_config(dir);
    const auto start = std::chrono::steady_clock::now();
    auto w = *nl::Writer::open(config, 1);
    const auto* src = w->add_source("agent1", "127.0.0.1:3128");
    for (std::uint64_t i = 0; i < records; ++i) fill(w->producer(0), src, set, target, i);
    // The writer's own lines: the file record, and a checkpoint each
    // checkpoint_records lines.
    const auto lines = records + 1 + (records + 1) / config.checkpoint_records;
    w->wake();
    while (w->stats().records < lines) std::this_thread::sleep_for(std::chrono::microseconds(100));
    state.PauseTiming();
    const auto end = std::chrono::steady_clock::now();
    w.reset();
    written += end - start;
    stopping += std::chrono::steady_clock::now() - end;
    bytes += fs::file_size(dir / "log" / "network.jsonl");
    fs::remove_all(dir);
    state.ResumeTiming();
  }
  const auto n = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(records));
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.counters["stop_ms"] = stopping.count() * 1000 / n;
  state.counters["with_stop_per_second"] = n * static_cast<double>(records) / (written + stopping).count();
}
BENCHMARK(BM_WriterThroughput)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

// Baseline: the same record as a Boost.JSON value, serialized, nothing else.
void BM_BaselineBoostJsonSerialize(benchmark::State& state) {
  std::uint64_t i = 0;
  for (auto _ : state) {
    boost::json::object o;
    o["schema_version"] = 1;
    o["type"] = "decision";
    o["seq"] = ++i;
    o["time"] = "2027-01-15T08:00:00.000001Z";
    o["id"] = "8d7016e0-0000000000000001";
    o["sandbox"] = "agent1";
    o["listener"] = "127.0.0.1:3128";
    o["client"] = "127.0.0.1:40000";
    o["proxy_type"] = "connect";
    o["requested"] = "api.example.com:443";
    o["target"] = "api.example.com:443";
    o["addresses"] = boost::json::array{"93.184.216.34"};
    o["address"] = "93.184.216.34";
    o["verdict"] = "allow";
    o["would_deny"] = false;
    o["rule"] = boost::json::object{{"text", "*.example.com"}, {"action", "allow"}, {"file", "bench.yaml"}, {"line", 4}};
    o["policy_sha256"] = bench_policy()->sha256;
    o["phase"] = "host";
    o["reason"] = "allowed-by-rule";
    o["status"] = 200;
    auto s = boost::json::serialize(o);
    benchmark::DoNotOptimize(s.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BaselineBoostJsonSerialize)->Unit(benchmark::kNanosecond);

// The reader: `sandgate network log` over `records` decisions and their closes.
void BM_Summarize(benchmark::State& state) {
  const auto records = static_cast<std::uint64_t>(state.range(0));
  const auto dir = bench_dir();
  const auto set = bench_policy();
  const auto target = *sandgate::policy::parse_target("api.example.com:443", std::nullopt);
  {
    auto w = *nl::Writer::open(bench_config(dir), 1);
    const auto* src = w->add_source("agent1", "127.0.0.1:3128");
    auto& p = w->producer(0);
    for (std::uint64_t i = 0; i < records; ++i) {
      fill(p, src, set, target, i);
      // Its close record, as the proxy writes one for every allowed connection.
      nl::Event* e;
      while (!(e = p.claim())) std::this_thread::yield();
      e->kind = nl::Event::Kind::close;
      e->id = p.next_id() - 1;
      e->bytes_up = 1000;
      e->bytes_down = 50'000;
      e->end = nl::EndReason::client_close;
      e->policy_set.reset();
      p.publish();
    }
  }
  const auto path = (dir / "log" / "network.jsonl").string();
  const auto size = fs::file_size(path);
  for (auto _ : state) {
    nl::LineReader reader(*nl::log_files(path));
    auto s = nl::summarize(reader, nl::Filter{});
    benchmark::DoNotOptimize(s.decisions);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(records));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
  fs::remove_all(dir);
}
BENCHMARK(BM_Summarize)->Arg(400'000)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
