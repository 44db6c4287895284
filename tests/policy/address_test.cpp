#include <gtest/gtest.h>

#include "sandgate/policy/address.h"

namespace sandgate::policy {
namespace {

TEST(Address, ParsesStrictTextAndPrintsCanonically) {
  struct Case {
    const char* in;
    const char* out;  // nullptr: rejected
  } cases[] = {
      {"192.0.2.1", "192.0.2.1"},   {"0.0.0.0", "0.0.0.0"},       {"255.255.255.255", "255.255.255.255"},
      {"2001:DB8::1", "2001:db8::1"}, {"::1", "::1"},             {"::ffff:192.0.2.1", "192.0.2.1"},
      {"01.2.3.4", nullptr},        {"1.2.3", nullptr},           {"256.1.1.1", nullptr},
      {"1.2.3.4.5", nullptr},       {"0x7f.0.0.1", nullptr},      {"", nullptr},
      {"2001:db8::1%eth0", nullptr}, {"[::1]", nullptr},           {"1.2.3.4 ", nullptr},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    auto a = parse_address(c.in);
    if (!c.out) {
      EXPECT_FALSE(a);
      continue;
    }
    ASSERT_TRUE(a);
    EXPECT_EQ(a->to_string(), c.out);
  }
}

TEST(Address, Ipv4MappedIsTheIpv4Address) {
  EXPECT_EQ(*parse_address("::ffff:10.1.2.3"), *parse_address("10.1.2.3"));
  EXPECT_TRUE(parse_address("10.1.2.3")->is_v4());
  EXPECT_FALSE(parse_address("::10.1.2.3")->is_v4());
}

TEST(Cidr, ParsesLengthsInTheirFamily) {
  struct Case {
    const char* in;
    const char* out;
    bool host_bits;
  } cases[] = {
      {"10.0.0.0/8", "10.0.0.0/8", false},       {"10.1.2.3/8", "10.0.0.0/8", true},
      {"0.0.0.0/0", "0.0.0.0/0", false},         {"192.0.2.1", "192.0.2.1/32", false},
      {"2001:db8::/32", "2001:db8::/32", false}, {"2001:db8::1/32", "2001:db8::/32", true},
      {"::/0", "::/0", false},                   {"fe80::1/128", "fe80::1/128", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    auto p = parse_cidr(c.in);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->cidr.to_string(), c.out);
    EXPECT_EQ(p->host_bits_set, c.host_bits);
  }
  for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/08", "2001:db8::/129", "x/8", "10.0.0.0/-1"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(parse_cidr(bad));
  }
}

TEST(Cidr, ContainsAndLast) {
  auto c = parse_cidr("172.16.0.0/12")->cidr;
  EXPECT_TRUE(c.contains(*parse_address("172.31.255.255")));
  EXPECT_FALSE(c.contains(*parse_address("172.32.0.0")));
  EXPECT_EQ(c.last().to_string(), "172.31.255.255");
  auto all = parse_cidr("::/0")->cidr;
  EXPECT_TRUE(all.contains(*parse_address("ffff::1")));
  EXPECT_EQ(all.last().to_string(), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
}

TEST(Address, EmbeddedIpv4Forms) {
  struct Case {
    const char* in;
    std::vector<const char*> inner;
  } cases[] = {
      {"64:ff9b::7f00:1", {"127.0.0.1"}},            // NAT64 well-known /96
      {"64:ff9b:1:7f00:0:100::", {"127.0.0.1"}},     // local-use NAT64 /48 (u-octet skipped)
      {"2002:a00:1::", {"10.0.0.1"}},                // 6to4
      {"2001:0:808:808::80ff:fefe", {"8.8.8.8", "127.0.1.1"}},  // Teredo: server, inverted client
      {"::a00:1", {"10.0.0.1"}},                     // IPv4-compatible
      {"::1", {}},
      {"::", {}},
      {"2606:4700::1111", {}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    Address out[2];
    const int n = embedded_v4(*parse_address(c.in), out);
    ASSERT_EQ(n, static_cast<int>(c.inner.size()));
    for (int i = 0; i < n; ++i) EXPECT_EQ(out[i].to_string(), c.inner[static_cast<std::size_t>(i)]);
  }
}

}  // namespace
}  // namespace sandgate::policy
