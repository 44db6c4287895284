// An allocator for the large lookup arrays: 2 MiB-aligned blocks the kernel
// may back with transparent huge pages (madvise). A random probe into a
// 10 MiB table then costs a cache miss but rarely a TLB miss too.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>

namespace sandgate::policy::detail {

template <class T>
struct HugePageAllocator {
  using value_type = T;
  static constexpr std::size_t huge = 2u << 20;

  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < huge) return static_cast<T*>(::operator new(bytes, std::align_val_t{alignof(T)}));
    const std::size_t rounded = (bytes + huge - 1) / huge * huge;
    void* p = std::aligned_alloc(huge, rounded);
    if (!p) throw std::bad_alloc();
    // A hint only: without THP the memory is used as ordinary pages.
    ::madvise(p, rounded, MADV_HUGEPAGE);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) < huge) ::operator delete(p, std::align_val_t{alignof(T)});
    else std::free(p);
  }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept { return true; }
};

}  // namespace sandgate::policy::detail
