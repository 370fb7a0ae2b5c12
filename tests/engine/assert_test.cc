#include "engine/assert.h"

#include <gtest/gtest.h>

#include "engine/types.h"

namespace tw {
namespace {

TEST(AssertTest, FailurePrintsFileLineAndExpression) {
  EXPECT_DEATH({ TW_ASSERT(1 + 1 == 3); }, "assert_test.cc:[0-9]+: assertion failed: 1 \\+ 1 == 3");
}

TEST(AssertTest, PassingAssertionDoesNothing) {
  int evaluated = 0;
  TW_ASSERT(++evaluated == 1);
  EXPECT_EQ(evaluated, 1);
}

TEST(TypesTest, ErrorCodeNamesAreAwsCodes) {
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kValidation), "ValidationException");
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kTaskTimedOut), "TaskTimedOut");
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kOverloaded), "ThrottlingException");
  EXPECT_STREQ(TaskStateName(TaskState::kTimedOut), "TIMED_OUT");
  EXPECT_STREQ(TimeoutKindName(TimeoutKind::kScheduleToStart), "scheduleToStart");
}

}  // namespace
}  // namespace tw
