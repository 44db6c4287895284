// Memory for the heads of one exchange: a request, its answer and any
// interim answers. Beast's fields allocate once per field, once for the
// target and once for the reason, some fifteen times for a small GET and
// its answer. From a HeadArena each is a pointer bump in a page this thread
// reuses, and nothing is freed until the exchange ends. The buffers that
// read heads take their first 4 KiB from the same pages.
#pragma once

#include <cstddef>
#include <memory>
#include <memory_resource>
#include <new>
#include <tuple>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

namespace sandgate::proxy::detail {

// 4 KiB pages this thread reuses. Taking one is no system call and no heap
// allocation once the thread has a spare; giving one back keeps a burst's
// worth for the next burst and frees the rest. Not shared across threads:
// a page goes back to the thread that took it (one session, one thread).
inline constexpr std::size_t page_size = 4096;
void* take_page();
void give_page(void* page) noexcept;

// Serves a request of exactly a page from the pages above, any other size
// from the heap.
template <class T>
struct PageAllocator {
  using value_type = T;
  PageAllocator() = default;
  template <class U>
  PageAllocator(const PageAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(n * sizeof(T) == page_size ? take_page() : ::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) == page_size) give_page(p);
    else ::operator delete(p);
  }
  friend bool operator==(PageAllocator, PageAllocator) noexcept { return true; }
};

// What a session reads heads into. Its first 4 KiB are a page, so a whole
// small answer comes in one read(2) with no heap allocation; a larger head
// grows it on the heap.
using ReadBuffer = boost::beast::basic_flat_buffer<PageAllocator<char>>;

using HeadAllocator = std::pmr::polymorphic_allocator<char>;
using Fields = boost::beast::http::basic_fields<HeadAllocator>;
template <bool isRequest>
using HeadParser = boost::beast::http::parser<isRequest, boost::beast::http::buffer_body, HeadAllocator>;
using RequestParser = HeadParser<true>;
using ResponseParser = HeadParser<false>;

// Takes a page and gives it back when destroyed, with everything allocated
// from it released. A head bigger than the page takes more from the heap,
// freed at the end as well. Not thread-safe: one arena serves one session
// on one thread.
class HeadArena {
 public:
  HeadArena();
  ~HeadArena();
  HeadArena(const HeadArena&) = delete;
  HeadArena& operator=(const HeadArena&) = delete;

  HeadAllocator allocator() const noexcept;

  struct Block;

 private:
  Block* block_;
};

// A parser whose fields come from `alloc`, allocated there itself (which
// keeps it out of the coroutine frame that uses it: Asio recycles frames of
// up to 1 KiB only, and a parser is 280 bytes).
template <class Parser>
struct ParserDeleter {
  std::pmr::memory_resource* memory;  // (not the allocator, which cannot be assigned)
  void operator()(Parser* p) const noexcept { HeadAllocator(memory).delete_object(p); }
};
template <class Parser>
using ParserPtr = std::unique_ptr<Parser, ParserDeleter<Parser>>;

template <class Parser>
ParserPtr<Parser> make_parser(HeadAllocator alloc) {
  auto* at = alloc.allocate_object<Parser>();
  return ParserPtr<Parser>(new (at) Parser(std::piecewise_construct, std::make_tuple(), std::make_tuple(alloc)),
                           ParserDeleter<Parser>{alloc.resource()});
}

}  // namespace sandgate::proxy::detail
