#include "host_table.h"

#include <algorithm>
#include <bit>
#include <map>
#include <unordered_map>

namespace sandgate::policy::detail {
namespace {

std::uint64_t hash_key(std::string_view key) noexcept {
  std::uint64_t h = fnv_basis;
  for (auto it = key.rbegin(); it != key.rend(); ++it) h = (h ^ static_cast<unsigned char>(*it)) * fnv_prime;
  return finish_hash(h);
}

// Rules that share a key, before they are flattened into a slot.
struct Group {
  RuleId exact_any = no_rule, apex_any = no_rule, sub_any = no_rule;
  std::map<std::uint16_t, RuleId> exact_ports, apex_ports, sub_ports;
};

}  // namespace

RuleId better_of(std::span<const RuleInfo> rules, RuleId a, RuleId b) noexcept {
  if (a == no_rule) return b;
  if (b == no_rule) return a;
  if (rules[a].action != rules[b].action) return rules[a].action == Action::deny ? a : b;
  return std::min(a, b);
}

void HostTable::compile(std::span<const RuleInfo> rules) {
  std::unordered_map<std::string_view, Group> groups;
  auto merge = [&](RuleId& slot, RuleId id) { slot = better_of(rules, slot, id); };
  auto merge_port = [&](std::map<std::uint16_t, RuleId>& m, std::uint16_t port, RuleId id) {
    auto [it, fresh] = m.try_emplace(port, id);
    if (!fresh) it->second = better_of(rules, it->second, id);
  };
  for (RuleId id = 0; id < rules.size(); ++id) {
    const auto& r = rules[id];
    if (r.kind != RuleKind::host) continue;
    const auto& p = r.host;
    switch (p.kind) {
      case HostKind::exact: {
        auto& g = groups[p.host];
        if (p.port) merge_port(g.exact_ports, *p.port, id); else merge(g.exact_any, id);
        break;
      }
      case HostKind::apex_and_subdomains: {
        auto& g = groups[p.host];
        if (p.port) {
          merge_port(g.apex_ports, *p.port, id);
          merge_port(g.sub_ports, *p.port, id);
        } else {
          merge(g.apex_any, id);
          merge(g.sub_any, id);
        }
        break;
      }
      case HostKind::subdomains: {
        auto& g = groups[p.host];
        if (p.port) merge_port(g.sub_ports, *p.port, id); else merge(g.sub_any, id);
        break;
      }
      case HostKind::regex:
      case HostKind::any:
        break;
    }
  }

  // Load factor at most 1/2 keeps probe chains short on misses.
  const std::size_t capacity = std::bit_ceil(std::max<std::size_t>(16, groups.size() * 2));
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  keys_.clear();
  ports_.clear();
  auto flatten = [&](const std::map<std::uint16_t, RuleId>& m) {
    PortList list{static_cast<std::uint32_t>(ports_.size()), static_cast<std::uint32_t>(m.size())};
    for (auto [port, id] : m) ports_.push_back({port, id});
    return list;
  };
  for (const auto& [key, g] : groups) {
    const auto h = hash_key(key);
    auto i = (h ^ (h >> 29)) & mask_;
    while (slots_[i].hash != 0) i = (i + 1) & mask_;
    Slot& s = slots_[i];
    s.hash = h;
    s.key_offset = static_cast<std::uint32_t>(keys_.size());
    s.key_length = static_cast<std::uint32_t>(key.size());
    keys_.append(key);
    s.exact_any = g.exact_any;
    s.apex_any = g.apex_any;
    s.sub_any = g.sub_any;
    s.exact_ports = flatten(g.exact_ports);
    s.apex_ports = flatten(g.apex_ports);
    s.sub_ports = flatten(g.sub_ports);
  }
}

const HostTable::Slot* HostTable::probe(std::uint64_t hash, std::string_view key) const noexcept {
  if (slots_.empty()) return nullptr;
  for (auto i = (hash ^ (hash >> 29)) & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.hash == 0) return nullptr;
    if (s.hash == hash && s.key_length == key.size() &&
        std::string_view(keys_).substr(s.key_offset, s.key_length) == key)
      return &s;
  }
}

RuleId HostTable::in_ports(PortList list, std::uint16_t port) const noexcept {
  const auto* first = ports_.data() + list.begin;
  const auto* last = first + list.count;
  const auto* it = std::lower_bound(first, last, port, [](const PortRule& r, std::uint16_t p) { return r.port < p; });
  return it != last && it->port == port ? it->rule : no_rule;
}

RuleId HostTable::find(std::string_view host, std::uint16_t port) const noexcept {
  if (slots_.empty() || host.empty()) return no_rule;
  // One right-to-left pass: the hash of each suffix that starts a label.
  // A normalized host has at most 127 labels; the bound keeps it on the stack.
  constexpr std::size_t max_labels = 128;
  std::uint64_t hashes[max_labels];
  std::uint32_t starts[max_labels];
  std::size_t n = 0;
  std::uint64_t h = fnv_basis;
  for (std::size_t i = host.size(); i-- > 0;) {
    h = (h ^ static_cast<unsigned char>(host[i])) * fnv_prime;
    if ((i == 0 || host[i - 1] == '.') && n < max_labels) {
      hashes[n] = finish_hash(h);
      starts[n] = static_cast<std::uint32_t>(i);
      ++n;
    }
  }
  // The whole host: exact rules first, then "**." rules for the apex.
  if (starts[n - 1] == 0) {
    if (const Slot* s = probe(hashes[n - 1], host)) {
      if (auto r = in_ports(s->exact_ports, port); r != no_rule) return r;
      if (s->exact_any != no_rule) return s->exact_any;
      if (auto r = in_ports(s->apex_ports, port); r != no_rule) return r;
      if (s->apex_any != no_rule) return s->apex_any;
    }
    --n;
  }
  // Proper suffixes, longest first: wildcard rules, port-specific first.
  for (std::size_t k = n; k-- > 0;) {
    if (const Slot* s = probe(hashes[k], host.substr(starts[k]))) {
      if (auto r = in_ports(s->sub_ports, port); r != no_rule) return r;
      if (s->sub_any != no_rule) return s->sub_any;
    }
  }
  return no_rule;
}

std::size_t HostTable::memory_bytes() const noexcept {
  return slots_.capacity() * sizeof(Slot) + keys_.capacity() + ports_.capacity() * sizeof(PortRule);
}

}  // namespace sandgate::policy::detail
