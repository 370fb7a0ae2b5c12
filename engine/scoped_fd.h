// ScopedFd: a file descriptor closed when it goes out of scope. For the few places that read a
// small file with POSIX calls (the token key file, the AWS credentials file).
#pragma once

#include <unistd.h>

#include <utility>

namespace tw {

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

}  // namespace tw
