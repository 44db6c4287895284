#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "sandgate/config/policy_store.h"

namespace sandgate::config {
namespace {

namespace fs = std::filesystem;
namespace pol = sandgate::policy;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sandgate-store-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    path_ = (dir_ / "policy.yaml").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& text) {
    // Replace atomically, as an editor or a config manager would.
    const auto tmp = path_ + ".tmp";
    std::ofstream(tmp) << text;
    fs::rename(tmp, path_);
  }
  fs::path dir_;
  std::string path_;
};

pol::Target target(const char* t) { return *pol::parse_target(t, 443); }

TEST_F(StoreTest, ReloadSwapsAndBadReloadKeepsTheLastGoodPolicy) {
  write("version: 1\nmode: deny\nallow_hosts: [a.example]\n");
  auto store = PolicyStore::open(path_);
  ASSERT_TRUE(store);
  auto first = (*store)->current();
  EXPECT_EQ(first->default_policy->check_host(target("a.example")).verdict, pol::Verdict::allow);

  write("version: 1\nmode: deny\nallow_hosts: [b.example]\n");
  auto second = (*store)->reload();
  ASSERT_TRUE(second);
  EXPECT_EQ((*store)->current()->default_policy->check_host(target("b.example")).verdict, pol::Verdict::allow);
  EXPECT_EQ((*store)->current()->default_policy->check_host(target("a.example")).verdict, pol::Verdict::deny);
  // A snapshot taken before the reload is unchanged: connections keep theirs.
  EXPECT_EQ(first->default_policy->check_host(target("a.example")).verdict, pol::Verdict::allow);

  write("version: 1\nmode: deny\nallow_hosts: [\"*.com\"]\n");
  auto bad = (*store)->reload();
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().front().line, 3u);
  EXPECT_EQ((*store)->current().get(), second->get());
}

TEST_F(StoreTest, OpenFailsOnABadFirstFile) {
  write("version: 1\nmode: maybe\n");
  auto store = PolicyStore::open(path_);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().front().to_string(),
            path_ + ":2:7: error: mode: must be 'allow' (allow what no rule blocks) or 'deny' (block what no rule allows)");
}

TEST_F(StoreTest, ReadersNeverSeeAHalfBuiltPolicy) {
  write("version: 1\nmode: deny\nallow_hosts: [a.example]\n");
  auto store = std::move(*PolicyStore::open(path_));
  std::atomic<bool> stop{false};
  std::atomic<long> reads{0};
  std::thread reader([&] {
    while (!stop.load()) {
      auto set = store->current();
      // Every snapshot is complete: exactly one of the two hosts is allowed.
      const bool a = set->default_policy->check_host(target("a.example")).verdict == pol::Verdict::allow;
      const bool b = set->default_policy->check_host(target("b.example")).verdict == pol::Verdict::allow;
      ASSERT_NE(a, b);
      ++reads;
    }
  });
  for (int i = 0; i < 100; ++i) {
    write(std::string("version: 1\nmode: deny\nallow_hosts: [") + (i % 2 ? "a" : "b") + ".example]\n");
    ASSERT_TRUE(store->reload());
  }
  stop = true;
  reader.join();
  EXPECT_GT(reads.load(), 0);
}

}  // namespace
}  // namespace sandgate::config
