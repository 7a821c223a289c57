#include "apiserver/http.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace kpx::apiserver::http {

namespace {

// Request heads beyond this are refused; bodies beyond the real server's
// limit (3 MiB, etcd's request size) get 413.
constexpr size_t kMaxHead = 64 * 1024;
constexpr size_t kMaxBody = 3 * 1024 * 1024;

Error sys_error(const std::string& what) { return system_error(what + ": " + std::strerror(errno)); }

std::string lower(std::string_view s) {
  std::string r(s);
  std::transform(r.begin(), r.end(), r.begin(), [](unsigned char c) { return std::tolower(c); });
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string http_date() {
  char buf[64];
  time_t now = time(nullptr);
  tm t{};
  gmtime_r(&now, &t);
  strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &t);
  return buf;
}

std::string head(int code, const std::string& content_type,
                 const std::vector<std::pair<std::string, std::string>>& extra, bool cache_control = true) {
  std::string h = "HTTP/1.1 " + std::to_string(code) + " " + std::string(reason_phrase(code)) + "\r\n";
  if (cache_control) h += "Cache-Control: no-cache, private\r\n";
  h += "Content-Type: " + content_type + "\r\n";
  for (const auto& [k, v] : extra) h += k + ": " + v + "\r\n";
  h += "Date: " + http_date() + "\r\n";
  return h;
}

}  // namespace

std::string Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return "";
}

std::string Request::query_value(const std::string& key) const {
  auto it = query.find(key);
  return it == query.end() ? "" : it->second;
}

std::string_view reason_phrase(int code) {
  switch (code) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 413:
      return "Request Entity Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%' && i + 2 < s.size()) {
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && c == '+' ? ' ' : c);
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string key = percent_decode(part.substr(0, eq), true);
    std::string value = eq == std::string_view::npos ? "" : percent_decode(part.substr(eq + 1), true);
    out[key] = value;
  }
  return out;
}

// ---- Connection ------------------------------------------------------------

bool Connection::fill() {
  char tmp[16384];
  for (;;) {
    ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
    if (n > 0) {
      buf_.append(tmp, static_cast<size_t>(n));
      return true;
    }
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

Connection::ReadStatus Connection::read_request(Request& r) {
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (buf_.size() > kMaxHead) return ReadStatus::kTooLarge;
    if (!fill()) return ReadStatus::kClosed;
  }
  std::string_view headtext(buf_.data(), end);
  size_t line_end = headtext.find("\r\n");
  std::string_view request_line = headtext.substr(0, line_end);
  size_t sp1 = request_line.find(' ');
  size_t sp2 = request_line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) return ReadStatus::kMalformed;
  r = Request{};
  r.method = std::string(request_line.substr(0, sp1));
  r.target = std::string(request_line.substr(sp1 + 1, sp2 - sp1 - 1));
  r.version = std::string(request_line.substr(sp2 + 1));
  if (r.version.rfind("HTTP/1.", 0) != 0 || r.target.empty()) return ReadStatus::kMalformed;
  size_t qpos = r.target.find('?');
  r.path = percent_decode(std::string_view(r.target).substr(0, qpos), false);
  if (qpos != std::string::npos) r.query = parse_query(std::string_view(r.target).substr(qpos + 1));

  std::string_view rest =
      line_end == std::string_view::npos ? std::string_view() : headtext.substr(line_end + 2);
  while (!rest.empty()) {
    size_t e = rest.find("\r\n");
    std::string_view line = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return ReadStatus::kMalformed;
    r.headers.emplace_back(lower(trim(line.substr(0, colon))), std::string(trim(line.substr(colon + 1))));
  }
  buf_.erase(0, end + 4);

  bool chunked = lower(r.header("transfer-encoding")).find("chunked") != std::string::npos;
  std::string cl = r.header("content-length");
  size_t length = 0;
  if (!chunked && !cl.empty()) {
    char* endp = nullptr;
    unsigned long long v = std::strtoull(cl.c_str(), &endp, 10);
    if (*endp != '\0') return ReadStatus::kMalformed;
    if (v > kMaxBody) return ReadStatus::kTooLarge;
    length = static_cast<size_t>(v);
  }
  bool has_body = chunked || length > 0;
  if (has_body && lower(r.header("expect")) == "100-continue" && buf_.empty())
    send_raw("HTTP/1.1 100 Continue\r\n\r\n");
  if (!chunked) {
    while (buf_.size() < length)
      if (!fill()) return ReadStatus::kClosed;
    r.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return ReadStatus::kOk;
  }
  // A chunked request body: size line, data, CRLF, ..., 0 CRLF CRLF.
  for (;;) {
    size_t le;
    while ((le = buf_.find("\r\n")) == std::string::npos)
      if (!fill()) return ReadStatus::kClosed;
    size_t size = std::strtoul(buf_.substr(0, le).c_str(), nullptr, 16);
    if (r.body.size() + size > kMaxBody) return ReadStatus::kTooLarge;
    while (buf_.size() < le + 2 + size + 2)
      if (!fill()) return ReadStatus::kClosed;
    r.body.append(buf_, le + 2, size);
    buf_.erase(0, le + 2 + size + 2);
    if (size == 0) return ReadStatus::kOk;  // (trailers are not supported)
  }
}

bool Connection::send_raw(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool Connection::send(const Response& r, bool keep_alive) {
  std::string h = head(r.code, r.content_type, r.headers, r.cache_control);
  h += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  if (!keep_alive || !client_keep_alive_) h += "Connection: close\r\n";
  h += "\r\n";
  // One write for small answers: a client sees the head and the body together.
  if (r.body.size() < 64 * 1024) return send_raw(h + r.body);
  return send_raw(h) && send_raw(r.body);
}

bool Connection::send_stream_head(int code, const std::string& content_type) {
  std::string h = head(code, content_type, {{"Transfer-Encoding", "chunked"}});
  h += "\r\n";
  return send_raw(h);
}

bool Connection::send_chunk(std::string_view data) {
  if (data.empty()) return true;  // an empty chunk would end the stream
  char size[32];
  snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string c(size);
  c.append(data);
  c += "\r\n";
  return send_raw(c);
}

bool Connection::send_stream_end() { return send_raw("0\r\n\r\n"); }

bool Connection::peer_closed() const {
  pollfd p{fd_, static_cast<short>(POLLIN | POLLRDHUP), 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

// ---- Server ----------------------------------------------------------------

Result<std::unique_ptr<Server>> Server::listen(const sockaddr_storage& addr, socklen_t len, Handler handler) {
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return sys_error("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    Error e = sys_error("bind");
    close(fd);
    return e;
  }
  if (::listen(fd, 256) != 0) {
    Error e = sys_error("listen");
    close(fd);
    return e;
  }
  return adopt(fd, std::move(handler));
}

Result<std::unique_ptr<Server>> Server::adopt(int fd, Handler handler) {
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
  uint16_t port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                              : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  int wake = eventfd(0, EFD_CLOEXEC);
  if (wake < 0) {
    Error e = sys_error("eventfd");
    close(fd);
    return e;
  }
  return std::unique_ptr<Server>(new Server(fd, wake, port, std::move(handler)));
}

void Server::start() {
  if (!acceptor_.joinable() && !stopping_) acceptor_ = std::thread([this] { accept_loop(); });
}

Server::Server(int listen_fd, int wake_fd, uint16_t port, Handler handler)
    : listen_fd_(listen_fd), wake_fd_(wake_fd), port_(port), handler_(std::move(handler)) {}

Server::~Server() {
  stop();
  close(listen_fd_);
  close(wake_fd_);
}

void Server::accept_loop() {
  while (!stopping_) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (stopping_ || (p[1].revents & POLLIN)) return;
    if (!(p[0].revents & POLLIN)) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    reap_finished();
    std::lock_guard lk(clients_mu_);
    if (stopping_) {
      close(fd);
      return;
    }
    auto c = std::make_unique<Client>();
    c->fd = fd;
    Client* raw = c.get();
    clients_.push_back(std::move(c));
    raw->thread = std::thread([this, raw] { serve(raw); });
  }
}

void Server::serve(Client* c) {
  Connection conn(c->fd);
  for (;;) {
    Request req;
    auto st = conn.read_request(req);
    if (st == Connection::ReadStatus::kClosed) break;
    if (st != Connection::ReadStatus::kOk) {
      Response r;
      r.code = st == Connection::ReadStatus::kTooLarge ? 413 : 400;
      r.body =
          R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":")" +
          std::string(st == Connection::ReadStatus::kTooLarge ? "Request entity too large: limit is 3145728"
                                                              : "malformed HTTP request") +
          R"(","reason":")" +
          (st == Connection::ReadStatus::kTooLarge ? "RequestEntityTooLarge" : "BadRequest") +
          R"(","code":)" + std::to_string(r.code) + "}";
      conn.send(r, false);
      break;
    }
    std::string connection = lower(req.header("connection"));
    bool keep = req.version == "HTTP/1.1" ? connection != "close" : connection == "keep-alive";
    conn.set_client_keep_alive(keep);
    if (!handler_(req, conn) || !keep || stopping_) break;
  }
  std::lock_guard lk(clients_mu_);
  shutdown(c->fd, SHUT_RDWR);
  close(c->fd);
  c->fd = -1;
  c->done = true;
}

void Server::reap_finished() {
  std::list<std::unique_ptr<Client>> finished;
  {
    std::lock_guard lk(clients_mu_);
    for (auto it = clients_.begin(); it != clients_.end();) {
      if ((*it)->done) {
        finished.push_back(std::move(*it));
        it = clients_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : finished) c->thread.join();
}

void Server::stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) {
    // The acceptor also checks stopping_ on every wake-up; nothing else to do.
  }
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard lk(clients_mu_);
    for (auto& c : clients_)
      if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
  }
  // Handlers blocked on something other than their socket (a watch waiting
  // for events) are woken by their owner before stop() is called.
  std::list<std::unique_ptr<Client>> all;
  {
    std::lock_guard lk(clients_mu_);
    all.swap(clients_);
  }
  for (auto& c : all) c->thread.join();
}

}  // namespace kpx::apiserver::http
