#include "engine/assert.h"

#include <cstdio>
#include <cstdlib>

namespace tw::internal {

void AssertFail(const char* expr, const char* file, int line, const char* msg) {
  std::fprintf(stderr, "%s:%d: assertion failed: %s%s%s\n", file, line, expr, msg ? ": " : "",
               msg ? msg : "");
  std::fflush(stderr);
  std::abort();
}

}  // namespace tw::internal
