#include "host_table.h"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <unordered_map>

namespace sandgate::policy::detail {
namespace {

std::uint64_t hash_key(std::string_view key) noexcept {
  SuffixHash h;
  for (auto it = key.rbegin(); it != key.rend(); ++it) h.add(static_cast<unsigned char>(*it));
  return h.finish();
}

std::size_t align8(std::size_t n) noexcept { return (n + 7) & ~std::size_t{7}; }

}  // namespace

RuleId better_of(std::span<const RuleInfo> rules, RuleId a, RuleId b) noexcept {
  if (a == no_rule) return b;
  if (b == no_rule) return a;
  if (rules[a].action != rules[b].action) return rules[a].action == Action::deny ? a : b;
  return std::min(a, b);
}

void HostTable::compile(std::span<const RuleInfo> rules) {
  // Group rules by key: the any-port rules merge in place; port-specific ones
  // are collected flat and sorted afterwards (no per-key containers).
  struct Group {
    std::string_view key;
    RuleId exact_any = no_rule, apex_any = no_rule, sub_any = no_rule;
  };
  struct GroupPort {
    std::uint32_t group;
    Field field;
    std::uint16_t port;
    RuleId rule;
  };
  std::vector<Group> groups;
  std::vector<GroupPort> port_entries;
  std::unordered_map<std::string_view, std::uint32_t> index;
  index.reserve(rules.size());
  for (RuleId id = 0; id < rules.size(); ++id) {
    const auto& r = rules[id];
    if (r.kind != RuleKind::host) continue;
    const auto& p = r.host;
    if (p.kind != HostKind::exact && p.kind != HostKind::subdomains && p.kind != HostKind::apex_and_subdomains)
      continue;
    auto [it, fresh] = index.try_emplace(p.host, static_cast<std::uint32_t>(groups.size()));
    if (fresh) groups.push_back(Group{p.host});
    const auto g = it->second;
    auto merge = [&](RuleId Group::*field) { groups[g].*field = better_of(rules, groups[g].*field, id); };
    if (p.port) {
      if (p.kind == HostKind::exact) port_entries.push_back({g, Field::exact, *p.port, id});
      if (p.kind == HostKind::apex_and_subdomains) port_entries.push_back({g, Field::apex, *p.port, id});
      if (p.kind != HostKind::exact) port_entries.push_back({g, Field::sub, *p.port, id});
    } else {
      if (p.kind == HostKind::exact) merge(&Group::exact_any);
      if (p.kind == HostKind::apex_and_subdomains) merge(&Group::apex_any);
      if (p.kind != HostKind::exact) merge(&Group::sub_any);
    }
  }
  std::sort(port_entries.begin(), port_entries.end(), [](const GroupPort& a, const GroupPort& b) {
    return std::tie(a.group, a.field, a.port, a.rule) < std::tie(b.group, b.field, b.port, b.rule);
  });

  // Load factor at most 1/2 keeps probe chains short on misses.
  const std::size_t capacity = std::bit_ceil(std::max<std::size_t>(16, groups.size() * 2));
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  records_.clear();
  label_counts_ = 0;
  auto append = [&](const void* data, std::size_t n) {
    const auto* b = static_cast<const char*>(data);
    records_.insert(records_.end(), b, b + n);
  };
  std::size_t e = 0;
  for (std::uint32_t g = 0; g < groups.size(); ++g) {
    const auto key = groups[g].key;
    const auto h = hash_key(key);
    auto i = home(h);
    while (slots_[i].hash != 0) i = (i + 1) & mask_;
    Slot& s = slots_[i];
    s.hash = h;
    s.key_length = static_cast<std::uint16_t>(key.size());
    s.exact_any = groups[g].exact_any;
    s.apex_any = groups[g].apex_any;
    s.sub_any = groups[g].sub_any;
    std::memcpy(s.key, key.data(), std::min(key.size(), inline_key));
    label_counts_ |= label_bit(static_cast<std::size_t>(std::count(key.begin(), key.end(), '.')) + 1);
    s.record = static_cast<std::uint32_t>(records_.size());
    append(key.data(), key.size());
    records_.resize(align8(records_.size()), '\0');
    // Port entries sorted by (field, port); equal ones merged, deny first.
    std::vector<PortEntry> entries;
    for (; e < port_entries.size() && port_entries[e].group == g; ++e) {
      const auto& pe = port_entries[e];
      if (!entries.empty() && entries.back().field == pe.field && entries.back().port == pe.port)
        entries.back().rule = better_of(rules, entries.back().rule, pe.rule);
      else
        entries.push_back({pe.rule, pe.port, pe.field, 0});
    }
    s.ports = static_cast<std::uint16_t>(entries.size());
    if (entries.size() == 1) s.port = entries.front();
    else if (!entries.empty()) append(entries.data(), entries.size() * sizeof(PortEntry));
  }
  records_.shrink_to_fit();
}

const HostTable::Slot* HostTable::probe(std::uint64_t hash, std::string_view key) const noexcept {
  for (auto i = home(hash);; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.hash == 0) return nullptr;
    if (s.hash != hash || s.key_length != key.size()) continue;
    const std::size_t head = std::min(key.size(), inline_key);
    if (std::memcmp(s.key, key.data(), head) == 0 &&
        (key.size() == head ||
         std::memcmp(records_.data() + s.record + head, key.data() + head, key.size() - head) == 0))
      return &s;
  }
}

RuleId HostTable::port_rule(const Slot& s, Field field, std::uint16_t port) const noexcept {
  if (s.ports == 0) return no_rule;
  if (s.ports == 1) return s.port.field == field && s.port.port == port ? s.port.rule : no_rule;
  const char* at = records_.data() + s.record + align8(s.key_length);
  // Few ports per key in practice: a linear scan over sorted entries.
  for (std::size_t i = 0; i < s.ports; ++i) {
    PortEntry pe;
    std::memcpy(&pe, at + i * sizeof pe, sizeof pe);
    if (pe.field == field && pe.port == port) return pe.rule;
  }
  return no_rule;
}

RuleId HostTable::find(std::string_view host, std::uint16_t port) const noexcept {
  // A normalized name is at most 253 bytes and an address text at most 45;
  // the bound keeps the work arrays on the stack.
  constexpr std::size_t max_host = 255;
  if (slots_.empty() || host.empty() || host.size() > max_host) return no_rule;
  // One right-to-left pass keeps the running hash of every suffix; a second,
  // branch-free pass lists where labels start.
  std::uint64_t raw[max_host];
  SuffixHash h;
  for (std::size_t i = host.size(); i-- > 0;) {
    h.add(static_cast<unsigned char>(host[i]));
    raw[i] = h.h;
  }
  std::uint8_t starts[max_host + 1];
  std::size_t labels = 1;
  starts[0] = 0;
  for (std::size_t i = 0; i + 1 < host.size(); ++i) {
    starts[labels] = static_cast<std::uint8_t>(i + 1);
    labels += host[i] == '.';
  }
  // Hash only suffixes whose label count some key has, and start all their
  // cache misses at once so the probes below overlap instead of queueing.
  std::uint64_t hashes[max_host + 1];
  const std::uint64_t whole = SuffixHash{raw[0]}.finish();
  __builtin_prefetch(&slots_[home(whole)]);
  for (std::size_t j = 1; j < labels; ++j) {
    if (!(label_counts_ & label_bit(labels - j))) continue;
    hashes[j] = SuffixHash{raw[starts[j]]}.finish();
    __builtin_prefetch(&slots_[home(hashes[j])]);
  }
  // The whole host: exact rules first, then "**." rules for the apex.
  if (label_counts_ & label_bit(labels)) {
    if (const Slot* s = probe(whole, host)) {
      if (auto r = port_rule(*s, Field::exact, port); r != no_rule) return r;
      if (s->exact_any != no_rule) return s->exact_any;
      if (auto r = port_rule(*s, Field::apex, port); r != no_rule) return r;
      if (s->apex_any != no_rule) return s->apex_any;
    }
  }
  // Proper suffixes, longest first: wildcard rules, port-specific first.
  for (std::size_t j = 1; j < labels; ++j) {
    if (!(label_counts_ & label_bit(labels - j))) continue;
    if (const Slot* s = probe(hashes[j], host.substr(starts[j]))) {
      if (auto r = port_rule(*s, Field::sub, port); r != no_rule) return r;
      if (s->sub_any != no_rule) return s->sub_any;
    }
  }
  return no_rule;
}

std::size_t HostTable::memory_bytes() const noexcept {
  return slots_.capacity() * sizeof(Slot) + records_.capacity();
}

}  // namespace sandgate::policy::detail
