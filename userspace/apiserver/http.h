// A small HTTP/1.1 server over POSIX sockets: one thread per connection,
// keep-alive, Content-Length and chunked responses. It knows nothing about
// Kubernetes; the API server hands it one handler.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "status/status.h"

namespace kpx::apiserver::http {

struct Request {
  std::string method;
  std::string target;                                        // as sent: path and query
  std::string path;                                          // percent-decoded
  std::string version;                                       // "HTTP/1.1"
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  std::map<std::string, std::string> query;                  // decoded; of a repeated key the last wins
  std::string body;

  // The first header of that (lower-case) name, or "".
  std::string header(std::string_view name) const;
  bool has_query(const std::string& key) const { return query.count(key) != 0; }
  std::string query_value(const std::string& key) const;
};

struct Response {
  int code = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // after Content-Type, before Date (as Go writes them)
  std::string body;
  // "Cache-Control: no-cache, private", as kube-apiserver sends it; a plain
  // Go handler (kube-proxy's health checks) sends none.
  bool cache_control = true;
};

std::string_view reason_phrase(int code);

// Splits "a=1&b=x%20y" into decoded pairs.
std::map<std::string, std::string> parse_query(std::string_view q);
std::string percent_decode(std::string_view s, bool plus_is_space);

// One accepted client socket. The Server owns the descriptor.
class Connection {
 public:
  explicit Connection(int fd) : fd_(fd) {}
  enum class ReadStatus { kOk, kClosed, kMalformed, kTooLarge };
  // Reads the next request (request line, headers, body).
  ReadStatus read_request(Request& out);
  // A whole response with Content-Length. False when the peer is gone.
  // keep_alive false (or a client that asked to close) adds "Connection: close".
  bool send(const Response& r, bool keep_alive);
  // Whether the client wants the connection kept after this request.
  void set_client_keep_alive(bool keep) { client_keep_alive_ = keep; }
  // A chunked response: the head once, then chunks, then the end.
  bool send_stream_head(int code, const std::string& content_type);
  bool send_chunk(std::string_view data);
  bool send_stream_end();
  // Raw bytes on the socket (to cut a stream short in the middle of a chunk).
  bool send_raw(std::string_view data);
  // The peer closed its side or the socket failed. Consumes nothing.
  bool peer_closed() const;

 private:
  bool fill();  // one recv() into buf_; false on EOF or error
  int fd_;
  bool client_keep_alive_ = true;
  std::string buf_;  // bytes received past the current request
};

class Server {
 public:
  // Answers one request on conn (with exactly one response); returns false to
  // close the connection afterwards.
  using Handler = std::function<bool(const Request&, Connection&)>;

  // Bound and listening; connections are accepted once start() is called.
  static Result<std::unique_ptr<Server>> listen(const sockaddr_storage& addr, socklen_t len, Handler handler);
  // Takes over a socket that is already bound and listening (made, say, in
  // another network namespace); closes it on failure.
  static Result<std::unique_ptr<Server>> adopt(int listen_fd, Handler handler);
  void start();
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  uint16_t port() const { return port_; }
  // Stop accepting, cut every connection, join every thread. Idempotent.
  void stop();

 private:
  struct Client {
    int fd = -1;  // -1 once closed; guarded by clients_mu_
    std::thread thread;
    std::atomic<bool> done{false};
  };

  Server(int listen_fd, int wake_fd, uint16_t port, Handler handler);
  void accept_loop();
  void serve(Client* c);
  void reap_finished();

  int listen_fd_;
  int wake_fd_;  // eventfd: wakes accept_loop on stop()
  uint16_t port_;
  Handler handler_;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  std::mutex clients_mu_;
  std::list<std::unique_ptr<Client>> clients_;
};

}  // namespace kpx::apiserver::http
