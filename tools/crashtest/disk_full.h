// Disk-full mode's disk: a tmpfs the crash test mounts (so it runs as root). Each cycle a ballast
// file takes all but a little of its free space, as another process filling the disk would; the
// workload's writes then fill the rest until the server refuses them; deleting the ballast gives
// the space back, and the server must recover by itself.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace tw::rpc {
class Client;
}  // namespace tw::rpc

namespace tw::crashtest {

class ServerProcess;

struct DiskFullResult {
  bool refused = false;    // the server reported its storage failed (and refused writes)
  bool healthy = false;    // the server reported its storage healthy again
  bool server_up = false;  // the server process was alive throughout
  int64_t healthy_after_ms = 0;
  // The last moment (wall ms) the server was seen healthy before it refused: the store's
  // failure and its reopen (which gives live tasks a new heartbeat period) came after it.
  int64_t last_ok_wall_ms = 0;
};

class SmallDisk {
 public:
  explicit SmallDisk(std::string path);
  ~SmallDisk();  // unmounts
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  bool Mount(std::string* error);
  const std::string& path() const { return path_; }

  // Lays the ballast, then calls `write` (a large write the caller records) until the server
  // says its storage failed, up to timeout_ms. The workload writes meanwhile too, but RocksDB
  // preallocates its log, so small writes alone would take long to meet the full disk.
  DiskFullResult FillUntilRefused(rpc::Client* client, ServerProcess* server, int64_t timeout_ms,
                                  const std::function<void()>& write);
  // Deletes the ballast and waits until the server says its storage works again.
  DiskFullResult FreeAndWaitHealthy(rpc::Client* client, ServerProcess* server, int64_t timeout_ms);

 private:
  bool LayBallast();

  std::string path_;
  bool mounted_ = false;
};

}  // namespace tw::crashtest
