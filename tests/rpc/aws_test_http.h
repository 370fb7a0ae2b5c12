// A blocking HTTP/1.1 client for the gateway tests: raw sockets, so that a test can send what
// no SDK would (half a request, a huge header, garbage) and see the exact bytes that come back.
// Header-only; every wait is bounded.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tw::rpc::testing {

inline constexpr int64_t kHttpWaitMs = 30'000;

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class HttpClient {
 public:
  explicit HttpClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  ~HttpClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool SendRaw(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // A POST / with an X-Amz-Target header and the given body.
  static std::string PostRequest(
      const std::string& target, const std::string& body,
      const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    std::string r =
        "POST / HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: application/x-amz-json-1.0\r\n";
    if (!target.empty()) r += "X-Amz-Target: " + target + "\r\n";
    for (const auto& [name, value] : extra) r += name + ": " + value + "\r\n";
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    return r;
  }

  std::optional<HttpResponse> Post(
      const std::string& target, const std::string& body,
      const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    if (!SendRaw(PostRequest(target, body, extra))) return std::nullopt;
    return Read();
  }

  std::optional<HttpResponse> Get(const std::string& path) {
    if (!SendRaw("GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n")) return std::nullopt;
    return Read();
  }

  // Reads one response; nullopt if the connection closed or nothing came within timeout_ms.
  std::optional<HttpResponse> Read(int64_t timeout_ms = kHttpWaitMs) {
    const int64_t deadline = NowMs() + timeout_ms;
    size_t end = 0;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill(deadline)) return std::nullopt;
    }
    HttpResponse r;
    const std::string head = in_.substr(0, end);
    in_.erase(0, end + 4);
    size_t line_end = head.find("\r\n");
    const std::string status_line = head.substr(0, line_end);
    if (status_line.size() < 12) return std::nullopt;
    r.status = std::stoi(status_line.substr(9, 3));
    while (line_end != std::string::npos) {
      const size_t next = head.find("\r\n", line_end + 2);
      const std::string line = head.substr(line_end + 2, next - line_end - 2);
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        r.headers[name] = value;
      }
      line_end = next;
    }
    const size_t length = std::stoul(
        r.header("content-length").empty() ? std::string("0") : r.header("content-length"));
    while (in_.size() < length) {
      if (!Fill(deadline)) return std::nullopt;
    }
    r.body = in_.substr(0, length);
    in_.erase(0, length);
    return r;
  }

  // True once the server closed the connection (EOF or reset) within timeout_ms.
  bool WaitClosed(int64_t timeout_ms = kHttpWaitMs) {
    const int64_t deadline = NowMs() + timeout_ms;
    while (true) {
      pollfd p{fd_, POLLIN, 0};
      const int64_t left = deadline - NowMs();
      if (left <= 0) return false;
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return true;
      in_.append(buf, static_cast<size_t>(n));
    }
  }

  // Closes with a reset (SO_LINGER 0): the peer's next write fails.
  void Reset() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    ::close(fd_);
    fd_ = -1;
  }

  static int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

 private:
  bool Fill(int64_t deadline) {
    pollfd p{fd_, POLLIN, 0};
    const int64_t left = deadline - NowMs();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    in_.append(buf, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string in_;
};

}  // namespace tw::rpc::testing
