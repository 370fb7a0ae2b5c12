// Release-on assertions. A failed TW_ASSERT prints file:line and the failed expression, then
// aborts: a broken invariant in a durable store must stop the process, not limp on.
#pragma once

namespace tw::internal {
[[noreturn]] void AssertFail(const char* expr, const char* file, int line, const char* msg);
}  // namespace tw::internal

// Always on, in every build type. Split compound conditions: TW_ASSERT(a); TW_ASSERT(b);
#define TW_ASSERT(expr)                                               \
  do {                                                                \
    if (__builtin_expect(!(expr), 0)) {                               \
      ::tw::internal::AssertFail(#expr, __FILE__, __LINE__, nullptr); \
    }                                                                 \
  } while (0)

#define TW_ASSERT_MSG(expr, msg)                                    \
  do {                                                              \
    if (__builtin_expect(!(expr), 0)) {                             \
      ::tw::internal::AssertFail(#expr, __FILE__, __LINE__, (msg)); \
    }                                                               \
  } while (0)

// For checks too expensive for release (e.g. walking a whole structure).
#ifdef NDEBUG
#define TW_DEBUG_ASSERT(expr) ((void)0)
#else
#define TW_DEBUG_ASSERT(expr) TW_ASSERT(expr)
#endif
