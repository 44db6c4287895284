// Decision latency, compile time and memory of the policy engine at 10, 1k,
// 100k and 1M rules, with a baseline measured in the same run: one lookup in
// a std::unordered_set of the same host names (the least a filter can do).
//
//   build/release/bench/policy_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <map>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "sandgate/policy/policy.h"

namespace {

namespace pol = sandgate::policy;

constexpr std::size_t query_count = 4096;  // cycled through; a power of two

std::string exact_host(std::size_t i) { return "host-" + std::to_string(i) + ".example.net"; }
std::string wild_suffix(std::size_t i) { return "wild-" + std::to_string(i) + ".example.com"; }

// Half exact hosts, half "*." wildcards; a quarter of each with a port.
std::shared_ptr<const pol::Policy> host_policy(std::size_t n) {
  pol::PolicyBuilder b(pol::Mode::deny, false);
  for (std::size_t i = 0; i < n; ++i) {
    std::string text = i % 2 ? "*." + wild_suffix(i) : exact_host(i);
    if (i % 4 < 2) text += ":443";
    auto p = pol::parse_host_pattern(text);
    b.add_host_rule(i % 7 ? pol::Action::allow : pol::Action::deny, std::move(*p), text, "", {"bench.yaml", 1, 1});
  }
  return *std::move(b).build();
}

std::vector<pol::Target> host_queries(std::size_t n, bool hits) {
  std::mt19937_64 rng(42);
  std::vector<pol::Target> out;
  for (std::size_t q = 0; q < query_count; ++q) {
    const std::size_t i = rng() % n;
    std::string host = hits ? (i % 2 ? "api.v1." + wild_suffix(i) : exact_host(i))
                            : "api.v1.miss-" + std::to_string(i) + ".example.org";
    out.push_back(*pol::parse_target(host, 443));
  }
  return out;
}

// 80% IPv4 ranges (/16../32), 20% IPv6 (/32../64), random.
std::vector<pol::Cidr> random_cidrs(std::size_t n) {
  std::mt19937_64 rng(7);
  std::vector<pol::Cidr> out;
  for (std::size_t i = 0; i < n; ++i) {
    pol::Cidr c;
    if (i % 5) {
      const int len = 16 + static_cast<int>(rng() % 17);
      // Rules in 0.0.0.0/1; misses are drawn from 128.0.0.0-168.255.255.255.
      const auto v4 = static_cast<std::uint32_t>(rng()) & 0x7fff'ffffu & (~0u << (32 - len));
      c.base = pol::Address::from_v4(v4);
      c.prefix_len = static_cast<std::uint8_t>(96 + len);
    } else {
      const int len = 32 + static_cast<int>(rng() % 33);
      c.base = pol::Address{(0x2000'0000'0000'0000ULL | (rng() >> 3)) & (~0ULL << (64 - len)), 0};
      c.prefix_len = static_cast<std::uint8_t>(len);
    }
    out.push_back(c);
  }
  return out;
}

std::shared_ptr<const pol::Policy> cidr_policy(const std::vector<pol::Cidr>& cidrs) {
  pol::PolicyBuilder b(pol::Mode::allow, false);
  for (std::size_t i = 0; i < cidrs.size(); ++i)
    b.add_cidr_rule(i % 3 ? pol::Action::deny : pol::Action::allow, cidrs[i], "", "", {"bench.yaml", 1, 1});
  return *std::move(b).build();
}

std::vector<pol::Address> address_queries(const std::vector<pol::Cidr>& cidrs, bool hits) {
  std::mt19937_64 rng(99);
  std::vector<pol::Address> out;
  for (std::size_t q = 0; q < query_count; ++q) {
    if (hits) {
      const auto& c = cidrs[rng() % cidrs.size()];
      const auto last = c.last();
      out.push_back({c.base.hi | (rng() & (last.hi ^ c.base.hi)), c.base.lo | (rng() & (last.lo ^ c.base.lo))});
    } else {
      out.push_back(pol::Address::from_v4(0x8000'0000u + static_cast<std::uint32_t>(rng() % 0x2900'0000u)));
    }
  }
  return out;
}

// 10, 1k, 100k and 1M rules.
void sizes(benchmark::internal::Benchmark* b) {
  for (int n : {10, 1'000, 100'000, 1'000'000}) b->Arg(n);
}

// --- Decisions ---

void BM_CheckHost(benchmark::State& state, bool hits) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto policy = host_policy(n);
  const auto queries = host_queries(n, hits);
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(policy->check_host(queries[i++ & (query_count - 1)]));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void BM_CheckAddress(benchmark::State& state, bool hits) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto cidrs = random_cidrs(n);
  const auto policy = cidr_policy(cidrs);
  const auto queries = address_queries(cidrs, hits);
  const pol::Target t = *pol::parse_target("x.example", 443);
  const pol::Decision host = policy->check_host(t);
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(policy->check_address(host, t, queries[i++ & (query_count - 1)]));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// Baseline: the same host names in a std::unordered_set, one find() per query
// (exact names only, no ports, no wildcards, no decision).
void BM_BaselineUnorderedSet(benchmark::State& state, bool hits) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::unordered_set<std::string> set;
  for (std::size_t i = 0; i < n; ++i) set.insert(i % 2 ? "api.v1." + wild_suffix(i) : exact_host(i));
  const auto queries = host_queries(n, hits);
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(set.find(queries[i++ & (query_count - 1)].host));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

BENCHMARK_CAPTURE(BM_CheckHost, hit, true)->Apply(sizes);
BENCHMARK_CAPTURE(BM_CheckHost, miss, false)->Apply(sizes);
BENCHMARK_CAPTURE(BM_BaselineUnorderedSet, hit, true)->Apply(sizes);
BENCHMARK_CAPTURE(BM_BaselineUnorderedSet, miss, false)->Apply(sizes);
BENCHMARK_CAPTURE(BM_CheckAddress, hit, true)->Apply(sizes);
BENCHMARK_CAPTURE(BM_CheckAddress, miss, false)->Apply(sizes);

// --- Compile time and memory per rule ---

// Compiles N rules per iteration; `compile(n)` returns the policy.
template <class Compile>
void compile_benchmark(benchmark::State& state, Compile compile) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::size_t bytes = 0;
  for (auto _ : state) bytes = compile(n)->memory_bytes();
  state.counters["rules"] = static_cast<double>(n);
  state.counters["bytes_per_rule"] = static_cast<double>(bytes) / static_cast<double>(n);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void BM_CompileHosts(benchmark::State& state) { compile_benchmark(state, host_policy); }

void BM_CompileCidrs(benchmark::State& state) {
  const auto cidrs = random_cidrs(static_cast<std::size_t>(state.range(0)));
  compile_benchmark(state, [&](std::size_t) { return cidr_policy(cidrs); });
}

BENCHMARK(BM_CompileHosts)->Apply(sizes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CompileCidrs)->Apply(sizes)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
