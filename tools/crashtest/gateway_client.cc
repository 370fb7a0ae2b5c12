#include "tools/crashtest/gateway_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cerrno>
#include <cstdlib>

#include "tools/crashtest/server_process.h"

namespace tw::crashtest {

namespace http = boost::beast::http;

std::string GatewayReply::error_code() const {
  if (status == 200 || !body.is_object()) return "";
  auto it = body.find("__type");
  if (it == body.end() || !it->is_string()) return "";
  const std::string type = it->get<std::string>();
  const size_t hash = type.rfind('#');
  return hash == std::string::npos ? type : type.substr(hash + 1);
}

GatewayClient::GatewayClient(std::string address) {
  const size_t colon = address.rfind(':');
  host_ = address.substr(0, colon);
  port_ = static_cast<uint16_t>(std::strtoul(address.substr(colon + 1).c_str(), nullptr, 10));
}

GatewayClient::~GatewayClient() { Close(); }

void GatewayClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  in_.clear();
}

bool GatewayClient::Connect(int64_t deadline_ms) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port_);
  if (fd_ < 0 || ::inet_pton(AF_INET, host_.c_str(), &addr.sin_addr) != 1) {
    Close();
    return false;
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
      errno != EINPROGRESS) {
    Close();
    return false;
  }
  pollfd p{fd_, POLLOUT, 0};
  const int64_t left = deadline_ms - SteadyMs();
  int err = 0;
  socklen_t len = sizeof(err);
  if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 1 ||
      ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
    Close();
    return false;
  }
  return true;
}

bool GatewayClient::WriteAll(const std::string& bytes, int64_t deadline_ms) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN) return false;
    pollfd p{fd_, POLLOUT, 0};
    const int64_t left = deadline_ms - SteadyMs();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 1) return false;
  }
  return true;
}

bool GatewayClient::ReadMore(int64_t deadline_ms) {
  char buf[16384];
  while (true) {
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      in_.append(buf, static_cast<size_t>(n));
      return true;
    }
    if (n == 0 || errno != EAGAIN) return false;
    pollfd p{fd_, POLLIN, 0};
    const int64_t left = deadline_ms - SteadyMs();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 1) return false;
  }
}

bool GatewayClient::Send(const std::string& target, const nlohmann::json& body,
                         int64_t timeout_ms) {
  const int64_t deadline = SteadyMs() + timeout_ms;
  if (fd_ < 0 && !Connect(deadline)) return false;
  const std::string payload = body.dump();
  const std::string request =
      "POST / HTTP/1.1\r\nHost: " + host_ +
      "\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amz-Target: " + target +
      "\r\nContent-Length: " + std::to_string(payload.size()) + "\r\n\r\n" + payload;
  if (!WriteAll(request, deadline)) {
    Close();
    return false;
  }
  return true;
}

std::optional<GatewayReply> GatewayClient::Receive(int64_t timeout_ms) {
  const int64_t deadline = SteadyMs() + timeout_ms;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64u << 20);
  while (!parser.is_done()) {
    boost::system::error_code ec;
    const size_t used = in_.empty() ? 0 : parser.put(boost::asio::buffer(in_), ec);
    in_.erase(0, used);
    if (ec == http::error::need_more || (in_.empty() && !parser.is_done())) {
      if (!ReadMore(deadline)) {
        Close();
        return std::nullopt;
      }
      continue;
    }
    if (ec) {
      Close();
      return std::nullopt;
    }
  }
  GatewayReply reply;
  const auto& message = parser.get();
  reply.status = static_cast<int>(message.result_int());
  reply.body = nlohmann::json::parse(message.body(), nullptr, /*allow_exceptions=*/false);
  if (reply.body.is_discarded()) reply.body = nullptr;
  if (!message.keep_alive()) Close();
  return reply;
}

std::optional<GatewayReply> GatewayClient::Call(const std::string& target,
                                                const nlohmann::json& body, int64_t timeout_ms) {
  if (!Send(target, body, timeout_ms)) return std::nullopt;
  return Receive(timeout_ms);
}

}  // namespace tw::crashtest
