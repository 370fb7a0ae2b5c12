// The socket waits of the gateway's fuzz target (tests/fuzz/fuzz_io.h). libFuzzer's SIGALRM
// (its -timeout watchdog, every timeout / 2 + 1 seconds) lands in the main thread while it
// waits for the gateway; a wait that ended there with EINTR was reported as a gateway hang
// (docs/RELIABILITY.md, "Fuzzing"). Here a signal is sent exactly while the wait sleeps in
// poll(2): the thread that sends it first sees the waiter blocked in poll
// (/proc/self/task/<tid>/syscall), so no timing decides the outcome.
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "tests/fuzz/fuzz_io.h"

namespace tw::fuzz {
namespace {

// The write end of the socket pair that the signal handler makes readable.
int signal_fd = -1;

void WriteOneByte(int) {
  const char byte = 'x';
  [[maybe_unused]] const ssize_t n = ::write(signal_fd, &byte, 1);
}

std::string SyscallFile(pid_t tid) { return "/proc/self/task/" + std::to_string(tid) + "/syscall"; }

// The number of the system call thread `tid` is blocked in; -1 while it runs.
long BlockedSyscall(pid_t tid) {
  std::ifstream in(SyscallFile(tid));
  std::string first;
  in >> first;
  if (first.empty() || !std::isdigit(static_cast<unsigned char>(first[0]))) return -1;
  return std::stol(first);
}

TEST(GatewayFuzzIo, ASignalWhileWaitingResumesTheWait) {
  const pid_t waiter = static_cast<pid_t>(::syscall(SYS_gettid));
  if (!std::ifstream(SyscallFile(waiter))) GTEST_SKIP() << "no " << SyscallFile(waiter);
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  signal_fd = fds[1];
  // Installed as libFuzzer installs its SIGALRM handler: no SA_RESTART.
  struct sigaction action {};
  struct sigaction old {};
  action.sa_handler = WriteOneByte;
  sigemptyset(&action.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR2, &action, &old), 0);

  // Once the waiter sleeps in poll, the signal: its handler makes the socket readable, and the
  // interrupted poll returns EINTR. Bounded: past 30 s the byte comes without a signal.
  const pthread_t waiter_thread = ::pthread_self();
  std::atomic<bool> signalled{false};
  std::thread interrupter([&]() {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < give_up) {
      const long call = BlockedSyscall(waiter);
      if (call == SYS_poll || call == SYS_ppoll) {
        signalled = true;
        ::pthread_kill(waiter_thread, SIGUSR2);
        return;
      }
      std::this_thread::yield();
    }
    WriteOneByte(0);
  });
  pollfd p{fds[0], POLLIN, 0};
  const int ready = PollFor(&p, 1, 60'000);
  interrupter.join();
  ::sigaction(SIGUSR2, &old, nullptr);

  EXPECT_TRUE(signalled);
  EXPECT_EQ(ready, 1);  // not -1 (EINTR), and not 0: the wait went on and saw the byte
  EXPECT_NE(p.revents & POLLIN, 0);
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace tw::fuzz
