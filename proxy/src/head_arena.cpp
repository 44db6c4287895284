#include "head_arena.h"

#include <sanitizer/asan_interface.h>

#include <memory>
#include <vector>

namespace sandgate::proxy::detail {

namespace {

// Pages kept for this thread's next exchanges: a session reading a head or
// an answer holds one or two, and a burst's worth stays for the next burst.
constexpr std::size_t keep = 64;

std::vector<void*>& spare_pages() {
  thread_local struct Spares {
    std::vector<void*> pages;
    Spares() { pages.reserve(keep); }  // so that giving a page back never allocates
    ~Spares() {
      for (void* p : pages) ::operator delete(p);
    }
  } spares;
  return spares.pages;
}

}  // namespace

void* take_page() {
  auto& spare = spare_pages();
  if (spare.empty()) return ::operator new(page_size);
  void* p = spare.back();
  spare.pop_back();
  ASAN_UNPOISON_MEMORY_REGION(p, page_size);
  return p;
}

void give_page(void* page) noexcept {
  auto& spare = spare_pages();
  if (spare.size() == keep) {
    ::operator delete(page);
    return;
  }
  // Under ASan, a read of a page after it was given back (a field after
  // its exchange, say) is reported, as it would be had it come from the
  // heap. (A no-op otherwise.)
  ASAN_POISON_MEMORY_REGION(page, page_size);
  spare.push_back(page);
}

// A GET from curl and nginx's answer take about 1.9 KiB here: 1.3 KiB of
// fields and two parsers of 280 bytes. Heads with twice the fields still fit.
struct HeadArena::Block {
  static constexpr std::size_t size = (page_size - sizeof(std::pmr::monotonic_buffer_resource)) /
                                      alignof(std::max_align_t) * alignof(std::max_align_t);
  alignas(std::max_align_t) std::byte bytes[size];
  std::pmr::monotonic_buffer_resource memory{bytes, size, std::pmr::new_delete_resource()};
};
static_assert(sizeof(HeadArena::Block) <= page_size);

HeadArena::HeadArena() : block_(new (take_page()) Block) {}

HeadArena::~HeadArena() {
  block_->~Block();  // releases what the heads took from the heap
  give_page(block_);
}

HeadAllocator HeadArena::allocator() const noexcept { return HeadAllocator(&block_->memory); }

}  // namespace sandgate::proxy::detail
