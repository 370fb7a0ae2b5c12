// Socket waits for the libFuzzer targets that talk to a front end over a real connection
// (gateway_fuzz.cc). Header-only, no dependencies.
//
// libFuzzer enforces -timeout with SIGALRM: an interval timer of timeout / 2 + 1 seconds (16 s
// for the Makefile's -timeout=30), its handler installed without SA_RESTART. The kernel gives a
// process's SIGALRM to the main thread when it can take it, and that is the thread waiting on
// the socket; poll(2) is never restarted after a handler (SA_RESTART or not): it returns -1 with
// EINTR however much of its timeout was left. A target that took that for "the peer stayed
// quiet" reports a hang whenever an alarm lands in a wait. The waits here resume after a
// signal, for the time left; connect(2) is the target's own business (Connect, gateway_fuzz.cc).
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace tw::fuzz {

// poll(2) on `fds`, `timeout_ms` in all however many signals interrupt it. Returns what poll
// returns: > 0 ready, 0 timed out, -1 another error (errno).
inline int PollFor(pollfd* fds, nfds_t n, int timeout_ms) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int left = timeout_ms;
  for (;;) {
    const int r = ::poll(fds, n, left);
    if (r >= 0 || errno != EINTR) return r;
    const auto rest =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (rest <= 0) return 0;
    left = static_cast<int>(rest);
  }
}

// Writes what is left of `bytes` as far as the socket takes it; *sent counts. A refused write
// (the peer closed) ends the sending: the rest is dropped.
inline void SendSome(int fd, std::string_view bytes, size_t* sent) {
  const ssize_t n = ::send(fd, bytes.data() + *sent, bytes.size() - *sent, MSG_NOSIGNAL);
  if (n > 0) *sent += static_cast<size_t>(n);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) *sent = bytes.size();
}

// Reads what is there into *received; false once the peer closed (or the connection failed).
inline bool ReceiveSome(int fd, std::string* received) {
  char buf[16 << 10];
  const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
  if (n > 0) received->append(buf, static_cast<size_t>(n));
  return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

}  // namespace tw::fuzz
