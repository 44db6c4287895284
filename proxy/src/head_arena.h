// Memory for the heads of one exchange: a request, its answer and any
// interim answers. Beast's fields allocate once per field, once for the
// target and once for the reason, some fifteen times for a small GET and
// its answer. From a HeadArena each is a pointer bump in a block this thread
// reuses, and nothing is freed until the exchange ends.
#pragma once

#include <memory>
#include <memory_resource>
#include <tuple>

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

namespace sandgate::proxy::detail {

using HeadAllocator = std::pmr::polymorphic_allocator<char>;
using Fields = boost::beast::http::basic_fields<HeadAllocator>;
template <bool isRequest>
using HeadParser = boost::beast::http::parser<isRequest, boost::beast::http::buffer_body, HeadAllocator>;
using RequestParser = HeadParser<true>;
using ResponseParser = HeadParser<false>;

// Takes a block from this thread's spares (or makes one) and gives it back
// when destroyed, with everything allocated from it released. A head bigger
// than the block takes more from the heap, freed at the end as well.
// Not thread-safe: one arena serves one session on one thread. Cost: no
// system call and no heap allocation once the thread has a spare block.
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
