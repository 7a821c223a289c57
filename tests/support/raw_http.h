// A raw HTTP/1.1 client for tests of the fake API server over real sockets
// on 127.0.0.1: Status bodies, chunk boundaries and torn streams are seen
// exactly as a client would see them. Header-only (gtest assertions inside).
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kpx::testing {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using Json = nlohmann::json;

// ---- a raw HTTP/1.1 client ---------------------------------------------------

struct HttpResponse {
  int code = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  Json json() const { return Json::parse(body, nullptr, false); }
};

class RawConnection {
 public:
  explicit RawConnection(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawConnection() { close(fd_); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return connected_; }

  void send_request(const std::string& method, const std::string& target, const std::string& body = "",
                    const std::string& content_type = "application/json") {
    std::string r = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n";
    if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH")
      r += "Content-Type: " + content_type + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    r += "\r\n" + body;
    ASSERT_EQ(::send(fd_, r.data(), r.size(), MSG_NOSIGNAL), static_cast<ssize_t>(r.size()));
  }

  // Status line and headers. False on timeout or EOF.
  bool read_head(HttpResponse* r, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill(deadline)) return false;
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    r->code = std::stoi(head.substr(9, 3));
    size_t pos = head.find("\r\n");
    while (pos != std::string::npos) {
      size_t next = head.find("\r\n", pos + 2);
      std::string line = head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
      size_t colon = line.find(':');
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r->headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
      pos = next;
    }
    return true;
  }

  // The next chunk's data: "" for the terminating chunk, nullopt on timeout
  // or when the connection ends first (torn() then holds what came of it).
  std::optional<std::string> read_chunk(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    size_t le;
    while ((le = buf_.find("\r\n")) == std::string::npos)
      if (!fill(deadline)) return tear();
    size_t size = std::stoul(buf_.substr(0, le), nullptr, 16);
    while (buf_.size() < le + 2 + size + 2)
      if (!fill(deadline)) return tear(le + 2);
    std::string data = buf_.substr(le + 2, size);
    buf_.erase(0, le + 2 + size + 2);
    return data;
  }

  HttpResponse read_response(std::chrono::milliseconds timeout = 5s) {
    HttpResponse r;
    if (!read_head(&r, timeout)) return r;
    auto deadline = Clock::now() + timeout;
    if (r.headers["transfer-encoding"] == "chunked") {
      while (auto c = read_chunk(timeout)) {
        if (c->empty()) break;
        r.body += *c;
      }
      return r;
    }
    size_t len = std::stoul(r.headers["content-length"]);
    while (buf_.size() < len)
      if (!fill(deadline)) break;
    r.body = buf_.substr(0, len);
    buf_.erase(0, len);
    return r;
  }

  void send_raw(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }
  // What is buffered and all that comes until EOF. False on timeout.
  bool read_to_end(std::string* out, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (fill(deadline)) {
    }
    *out = std::exchange(buf_, {});
    return eof_;
  }

  bool eof() const { return eof_; }
  const std::string& torn() const { return torn_; }

 private:
  bool fill(Clock::time_point deadline) {
    if (eof_) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char tmp[65536];
    ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  std::optional<std::string> tear(size_t skip = 0) {
    if (eof_) torn_ = buf_.substr(std::min(skip, buf_.size()));
    return std::nullopt;
  }

  int fd_;
  bool connected_ = false;
  bool eof_ = false;
  std::string buf_;
  std::string torn_;
};

inline HttpResponse call(uint16_t port, const std::string& method, const std::string& target,
                  const std::string& body = "", const std::string& content_type = "application/json") {
  RawConnection c(port);
  EXPECT_TRUE(c.connected());
  c.send_request(method, target, body, content_type);
  return c.read_response();
}

// Every byte a request gets back until the server closes (the request says
// "Connection: close"), or until the timeout; "" when nothing listens.
inline std::string raw_exchange(uint16_t port, const std::string& request, std::chrono::milliseconds timeout = 5s) {
  RawConnection c(port);
  if (!c.connected()) return "";
  std::string out;
  c.send_raw(request);
  c.read_to_end(&out, timeout);
  return out;
}

// A watch: the chunks as they came, and the events parsed from them.
class WatchStream {
 public:
  WatchStream(uint16_t port, const std::string& target) : conn_(port) {
    conn_.send_request("GET", target);
    conn_.read_head(&head_, 5s);
  }

  int code() const { return head_.code; }
  const HttpResponse& head() const { return head_; }

  // The next event, or nullopt on timeout, at the end of the stream or when
  // the connection breaks.
  std::optional<Json> next(std::chrono::milliseconds timeout = 3s) {
    auto deadline = Clock::now() + timeout;
    size_t nl;
    while ((nl = pending_.find('\n')) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto chunk = conn_.read_chunk(left);
      if (!chunk) {
        broken_ = conn_.eof();
        return std::nullopt;
      }
      if (chunk->empty()) {
        ended_ = true;
        return std::nullopt;
      }
      chunks_.push_back(*chunk);
      pending_ += *chunk;
    }
    std::string line = pending_.substr(0, nl);
    pending_.erase(0, nl + 1);
    return Json::parse(line, nullptr, false);
  }

  // Events until one of `type` arrives (others are collected in skipped).
  std::optional<Json> next_of(const std::string& type, std::chrono::milliseconds timeout = 3s) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      auto e = next(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
      if (!e) return std::nullopt;
      if ((*e)["type"] == type) return e;
      skipped.push_back(*e);
    }
    return std::nullopt;
  }

  bool ended() const { return ended_; }    // the terminating chunk came
  bool broken() const { return broken_; }  // the connection ended without it
  const std::vector<std::string>& chunks() const { return chunks_; }
  std::string torn() const { return pending_ + conn_.torn(); }
  std::vector<Json> skipped;

 private:
  RawConnection conn_;
  HttpResponse head_;
  std::string pending_;
  std::vector<std::string> chunks_;
  bool ended_ = false;
  bool broken_ = false;
};

}  // namespace kpx::testing
