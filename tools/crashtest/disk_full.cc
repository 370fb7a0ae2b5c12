#include "tools/crashtest/disk_full.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>

#include "rpc/client.h"
#include "tools/crashtest/server_process.h"

namespace tw::crashtest {

namespace {

// tmpfs takes memory only for what is written: room for a long run's retained tasks.
constexpr const char* kDiskSize = "size=1g,mode=0700";
// What the ballast leaves free: a few of the workload's inputs.
constexpr uint64_t kHeadroomBytes = 1u << 20;

// The server's own view of its storage; nullopt if it did not answer.
std::optional<StorageHealth> Health(rpc::Client* client) {
  auto r = client->Ping("crashtest");
  if (!r.ok()) return std::nullopt;
  return r.value.storage;
}

}  // namespace

SmallDisk::SmallDisk(std::string path) : path_(std::move(path)) {}

SmallDisk::~SmallDisk() {
  if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
}

bool SmallDisk::Mount(std::string* error) {
  if (::geteuid() != 0) {
    *error = "needs root: it mounts a tmpfs for the data directory";
    return false;
  }
  std::error_code ec;
  std::filesystem::create_directories(path_, ec);
  if (ec || ::mount("tmpfs", path_.c_str(), "tmpfs", 0, kDiskSize) != 0) {
    *error = "cannot mount a tmpfs on " + path_ + ": " + std::strerror(errno);
    return false;
  }
  mounted_ = true;
  return true;
}

bool SmallDisk::LayBallast() {
  struct statvfs st {};
  if (::statvfs(path_.c_str(), &st) != 0) return false;
  const uint64_t free_bytes = uint64_t{st.f_bavail} * st.f_frsize;
  if (free_bytes <= kHeadroomBytes) return true;
  const int fd = ::open((path_ + "/ballast").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const int rc = ::fallocate(fd, 0, 0, static_cast<off_t>(free_bytes - kHeadroomBytes));
  ::close(fd);
  return rc == 0;
}

// The store may fail and come back by itself several times between two looks (RocksDB frees
// obsolete files after a failed flush): a failure is a rise of the failure count.
DiskFullResult SmallDisk::FillUntilRefused(rpc::Client* client, ServerProcess* server,
                                           int64_t timeout_ms, const std::function<void()>& write) {
  DiskFullResult r;
  if (!LayBallast()) {
    std::cerr << "crashtest: cannot lay the ballast in " << path_ << ": " << std::strerror(errno)
              << "\n";
  }
  const int64_t deadline = SteadyMs() + timeout_ms;
  r.last_ok_wall_ms = WallMs();
  std::optional<uint64_t> failures_before;
  uint64_t unanswered = 0;
  while (SteadyMs() < deadline && server->Running()) {
    const int64_t asked = WallMs();
    const std::optional<StorageHealth> h = Health(client);
    if (h && !failures_before) failures_before = h->failures;
    if (h && (h->failures > *failures_before || !h->ok)) {
      r.refused = true;
      break;
    }
    if (h) r.last_ok_wall_ms = asked;
    if (!h) ++unanswered;
    write();
  }
  r.server_up = server->Running();
  if (!r.refused) {
    std::cerr << "crashtest: the server did not refuse within " << timeout_ms << " ms of the "
              << "disk filling (" << unanswered << " health checks unanswered)"
              << (r.server_up ? "" : "; the server died") << "\n";
  }
  return r;
}

DiskFullResult SmallDisk::FreeAndWaitHealthy(rpc::Client* client, ServerProcess* server,
                                             int64_t timeout_ms) {
  DiskFullResult r;
  const int64_t start = SteadyMs();
  std::error_code ec;
  std::filesystem::remove(path_ + "/ballast", ec);
  while (SteadyMs() - start < timeout_ms && server->Running()) {
    const std::optional<StorageHealth> h = Health(client);
    if (h && h->ok) {
      r.healthy = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  r.healthy_after_ms = SteadyMs() - start;
  r.server_up = server->Running();
  return r;
}

}  // namespace tw::crashtest
