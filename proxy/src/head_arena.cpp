#include "head_arena.h"

#include <sanitizer/asan_interface.h>

#include <memory>
#include <vector>

namespace sandgate::proxy::detail {

// A GET from curl and nginx's answer take about 1.9 KiB here: 1.3 KiB of
// fields and two parsers of 280 bytes. Heads with twice the fields still fit.
struct HeadArena::Block {
  static constexpr std::size_t size = 4096;
  alignas(std::max_align_t) std::byte bytes[size];
  std::pmr::monotonic_buffer_resource memory{bytes, size, std::pmr::new_delete_resource()};
};

namespace {

// Blocks kept for this thread's next exchanges: one is in use per exchange
// under way, and a burst's worth stays for the next burst.
constexpr std::size_t keep = 64;

std::vector<std::unique_ptr<HeadArena::Block>>& spare_blocks() {
  thread_local auto spare = [] {
    std::vector<std::unique_ptr<HeadArena::Block>> v;
    v.reserve(keep);  // so that giving a block back never allocates
    return v;
  }();
  return spare;
}

}  // namespace

HeadArena::HeadArena() {
  auto& spare = spare_blocks();
  if (spare.empty()) {
    block_ = new Block;
  } else {
    block_ = spare.back().release();
    spare.pop_back();
  }
  ASAN_UNPOISON_MEMORY_REGION(block_->bytes, Block::size);
}

HeadArena::~HeadArena() {
  block_->memory.release();
  // Under ASan, a field read after its exchange ended is reported, as it
  // would be had each field come from the heap. (A no-op otherwise.)
  ASAN_POISON_MEMORY_REGION(block_->bytes, Block::size);
  std::unique_ptr<Block> block(block_);
  if (auto& spare = spare_blocks(); spare.size() < keep) spare.push_back(std::move(block));
}

HeadAllocator HeadArena::allocator() const noexcept { return HeadAllocator(&block_->memory); }

}  // namespace sandgate::proxy::detail
