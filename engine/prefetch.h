// Cache prefetch hints that the optimizer keeps.
//
// GCC 12 at -O2 deletes a __builtin_prefetch whose only purpose sits behind a branch (a bounds
// or validity check in front of it): TimingWheel::Prefetch compiled to a bare `ret`. An asm
// statement marked volatile cannot be deleted, so these always issue. A prefetch never faults,
// whatever the address.
#pragma once

namespace tw {

// Into every cache level, for reading.
inline void PrefetchRead(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 3);
#endif
}

// Into every cache level, in a state that a store can use without another round trip
// (PREFETCHW; CPUs without it execute the encoding as a no-op).
inline void PrefetchWrite(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

}  // namespace tw
