// `kpx apiserver`: an in-memory Kubernetes API server for tests and the lab.
// Serves Services, EndpointSlices, Nodes, Namespaces and Pods with a real
// server's list, watch, paging and error behaviour, plus fault injection
// (faults.h). See userspace/apiserver/README.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "status/status.h"

namespace kpx::apiserver {

class Store;
class Faults;
class ContinueTokens;

struct Options {
  // host:port; port 0 picks a free one. Only loopback addresses unless allow_any.
  std::string listen = "127.0.0.1:0";
  bool allow_any = false;
  size_t compaction_window = 1000;  // events kept for watches and continued lists
  std::chrono::milliseconds bookmark_interval{60000};
  std::chrono::seconds max_watch_timeout{1800};  // and the default timeoutSeconds
  std::chrono::milliseconds continue_ttl{std::chrono::minutes(5)};
  bool split_watch_chunks = true;  // chunk boundaries not aligned with events
  // kube-apiserver's --watch-cache: with it, resourceVersion=0 lists come
  // whole from the cache (limit ignored); without, they are paged.
  bool watch_cache = true;
  uint64_t chunk_seed = 1;         // makes the splitting reproducible
  // "10.96.0.0/16": Services get ClusterIPs from this IPv4 range as from a
  // real server (cluster_ip.h). Empty: no allocation, clusterIPs stored as sent.
  std::string service_cluster_ip_range;
  // "30000-32767": NodePort and LoadBalancer Services get nodePorts (and
  // healthCheckNodePorts) from this range as from a real server, whose
  // default it is (node_port.h). Empty: no allocation, nodePorts stored as sent.
  std::string service_node_port_range = "30000-32767";
};

struct ListenAddress {
  std::string host;  // numeric: "127.0.0.1", "::1"
  uint16_t port = 0;
  bool ipv6 = false;
};

// "127.0.0.1:6443", "[::1]:0", "localhost:0". Refuses addresses that are not
// loopback (including the empty host and 0.0.0.0) unless allow_any.
Result<ListenAddress> parse_listen_address(const std::string& text, bool allow_any);

class ApiServer {
 public:
  // Listening and serving when this returns.
  static Result<std::unique_ptr<ApiServer>> start(const Options& o);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  uint16_t port() const;
  std::string address() const;  // "127.0.0.1:PORT" or "[::1]:PORT"
  std::string url() const;      // "http://" + address()

  // Serve on one more socket, already bound and listening: the lab gives the
  // server a socket made inside each node's network namespace, so agents
  // there reach it at their own 127.0.0.1 with no route to the root
  // namespace. Takes ownership of the fd.
  Status add_listener(int listen_fd);

  Store& store();
  Faults& faults();
  ContinueTokens& continue_tokens();

  // Ends every watch and connection. Idempotent; the destructor calls it.
  void stop();

 private:
  struct Impl;
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Serves until SIGTERM or SIGINT. Prints "listening on ADDRESS" once ready.
Status run(const Options& o, std::ostream& out);

}  // namespace kpx::apiserver
