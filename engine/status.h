// Status of a storage operation ([[nodiscard]]: a dropped status is a dropped error). Storage
// failures are not business outcomes: a failed write or sync poisons the store and the engine
// for good.
#pragma once

#include <string>
#include <utility>

namespace tw {

class [[nodiscard]] Status {
 public:
  enum class Code { kOk, kNotFound, kCorruption, kIoError, kInvalidArgument, kPoisoned };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status NotFound(std::string m = {}) { return Status(Code::kNotFound, std::move(m)); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status IoError(std::string m) { return Status(Code::kIoError, std::move(m)); }
  static Status InvalidArgument(std::string m) {
    return Status(Code::kInvalidArgument, std::move(m));
  }
  static Status Poisoned(std::string m) { return Status(Code::kPoisoned, std::move(m)); }

  bool ok() const { return code_ == Code::kOk; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace tw
