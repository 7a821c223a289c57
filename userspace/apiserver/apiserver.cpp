#include "apiserver/apiserver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>

#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "apiserver/cluster_ip.h"
#include "apiserver/continue_token.h"
#include "apiserver/discovery.h"
#include "apiserver/faults.h"
#include "apiserver/handlers.h"
#include "apiserver/http.h"
#include "apiserver/media.h"
#include "apiserver/node_port.h"
#include "apiserver/store.h"
#include "apiserver/watch.h"

namespace kpx::apiserver {

namespace {

bool is_loopback(const ListenAddress& a) {
  if (a.ipv6) {
    in6_addr v6{};
    inet_pton(AF_INET6, a.host.c_str(), &v6);
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return a.host.rfind("127.", 0) == 0;
}

http::Response text_response(int code, const std::string& body) {
  http::Response r;
  r.code = code;
  r.content_type = "text/plain; charset=utf-8";
  r.body = body;
  return r;
}

Json root_paths() {
  Json paths = Json::array({"/api", "/api/v1", "/apis", "/apis/discovery.k8s.io", "/apis/discovery.k8s.io/v1",
                            "/healthz", "/kpx/faults", "/livez", "/readyz", "/version"});
  return {{"paths", paths}};
}

// Creates the namespaces every cluster starts with.
void seed_namespaces(Store& store) {
  for (const char* name : {"default", "kube-node-lease", "kube-public", "kube-system"}) {
    Json ns = {{"kind", "Namespace"}, {"apiVersion", "v1"}, {"metadata", {{"name", name}}}};
    ns["spec"] = {{"finalizers", {"kubernetes"}}};
    ns["metadata"]["labels"] = {{"kubernetes.io/metadata.name", name}};
    ns["status"] = {{"phase", "Active"}};
    (void)store.create(namespaces_type(), std::move(ns));
  }
}

// The Service registry's allocations, in the real server's order (ClusterIP,
// then node ports on create; on update node ports first, as the real server
// checks an unchanged clusterIP only after allocating). Whatever a refused
// request claimed is given back. Either allocator may be absent.
TypeHooks service_hooks(ServiceIpAllocator* ips, NodePortAllocator* ports) {
  TypeHooks h;
  h.on_create = [ips, ports](Json& svc) -> std::optional<ApiStatus> {
    if (ips)
      if (auto refused = ips->on_create(svc)) return refused;
    if (ports)
      if (auto refused = ports->on_create(svc)) {
        if (ips) ips->on_remove(svc);
        return refused;
      }
    return std::nullopt;
  };
  h.on_update = [ips, ports](const Json& cur, Json& next) -> std::optional<ApiStatus> {
    if (ports)
      if (auto refused = ports->on_update(cur, next)) return refused;
    if (ips)
      if (auto refused = ips->on_update(cur, next)) {
        if (ports) ports->revert_update(cur, next);
        return refused;
      }
    return std::nullopt;
  };
  h.on_remove = [ips, ports](const Json& svc) {
    if (ips) ips->on_remove(svc);
    if (ports) ports->on_remove(svc);
  };
  return h;
}

}  // namespace

Result<ListenAddress> parse_listen_address(const std::string& text, bool allow_any) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos)
    return invalid_argument("invalid listen address '" + text + "': expected HOST:PORT");
  ListenAddress a;
  std::string host = text.substr(0, colon), port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535)
    return invalid_argument("invalid port '" + port + "' in listen address '" + text + "'");
  a.port = static_cast<uint16_t>(std::stoul(port));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    a.ipv6 = true;
  }
  if (host == "localhost") host = "127.0.0.1";
  if (host.empty()) host = a.ipv6 ? "::" : "0.0.0.0";
  in6_addr v6{};
  in_addr v4{};
  if (a.ipv6 ? inet_pton(AF_INET6, host.c_str(), &v6) != 1 : inet_pton(AF_INET, host.c_str(), &v4) != 1)
    return invalid_argument("invalid listen address '" + text + "': '" + host +
                            "' is not a numeric IP address");
  a.host = host;
  if (!allow_any && !is_loopback(a))
    return invalid_argument("refusing to listen on '" + text +
                            "': not a loopback address (the fake API server has no authentication; pass "
                            "--allow-any to listen there anyway)");
  return a;
}

struct ApiServer::Impl {
  explicit Impl(const Options& o)
      : opts(o),
        store(o.compaction_window),
        tokens(o.continue_ttl),
        faults(store, tokens),
        objects(store, tokens, o.watch_cache),
        watches(store, WatchOptions{o.bookmark_interval, o.max_watch_timeout, o.split_watch_chunks},
                o.chunk_seed) {}

  bool dispatch(const http::Request& req, http::Connection& conn);
  bool dispatch_api(const http::Request& req, http::Connection& conn);

  Options opts;
  Store store;
  ContinueTokens tokens;
  Faults faults;
  ObjectHandlers objects;
  WatchHandler watches;
  std::unique_ptr<ServiceIpAllocator> service_ips;  // null without a range
  std::unique_ptr<NodePortAllocator> node_ports;    // likewise
  std::string address;
  std::unique_ptr<http::Server> server;
  std::mutex extra_mu;
  std::vector<std::unique_ptr<http::Server>> extra_servers;
};

bool ApiServer::Impl::dispatch(const http::Request& req, http::Connection& conn) {
  try {
    return dispatch_api(req, conn);
  } catch (const std::exception& e) {
    // Nothing should throw here; if something does, the client gets a 500
    // rather than the process ending.
    return conn.send(status_response(internal_error_status(e.what())), false);
  }
}

bool ApiServer::Impl::dispatch_api(const http::Request& req, http::Connection& conn) {
  if (req.path == "/kpx/faults" || req.path.rfind("/kpx/faults/", 0) == 0)
    return conn.send(faults.handle(req), true);
  if (auto injected = faults.before_request(req)) return conn.send(*injected, true);
  if (req.path == "/healthz" || req.path == "/readyz" || req.path == "/livez")
    return conn.send(text_response(200, "ok"), true);
  if (req.path == "/") return conn.send(json_response(200, root_paths()), true);

  ResourcePath path;
  switch (parse_resource_path(req.path, &path)) {
    case PathMatch::kResource:
      if (is_watch_request(path, req)) return watches.serve(path, req, conn);
      return conn.send(objects.handle(path, req), true);
    case PathMatch::kUnknown:
      return conn.send(status_response(path_not_found_status()), true);
    case PathMatch::kOther:
      break;
  }
  if (auto doc = discovery_document(req.path, address)) {
    if (req.method != "GET") return conn.send(status_response(method_not_allowed_status()), true);
    return conn.send(json_response(200, *doc), true);
  }
  return conn.send(status_response(path_not_found_status()), true);
}

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ApiServer::~ApiServer() { stop(); }

Result<std::unique_ptr<ApiServer>> ApiServer::start(const Options& o) {
  auto addr = parse_listen_address(o.listen, o.allow_any);
  if (!addr) return addr.error();
  sockaddr_storage ss{};
  socklen_t len;
  if (addr->ipv6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(addr->port);
    inet_pton(AF_INET6, addr->host.c_str(), &s6->sin6_addr);
    len = sizeof *s6;
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(addr->port);
    inet_pton(AF_INET, addr->host.c_str(), &s4->sin_addr);
    len = sizeof *s4;
  }
  auto impl = std::make_unique<Impl>(o);
  if (!o.service_cluster_ip_range.empty()) {
    auto ips = ServiceIpAllocator::create(o.service_cluster_ip_range);
    if (!ips) return ips.error();
    impl->service_ips = std::move(*ips);
  }
  if (!o.service_node_port_range.empty()) {
    auto ports = NodePortAllocator::create(o.service_node_port_range);
    if (!ports) return ports.error();
    impl->node_ports = std::move(*ports);
  }
  // Before any Service is stored: there is nothing to recover.
  if (impl->service_ips || impl->node_ports)
    impl->store.set_hooks(*find_resource("", "v1", "services"),
                          service_hooks(impl->service_ips.get(), impl->node_ports.get()));
  seed_namespaces(impl->store);
  Impl* raw = impl.get();
  auto server = http::Server::listen(
      ss, len, [raw](const http::Request& req, http::Connection& conn) { return raw->dispatch(req, conn); });
  if (!server) return Error{server.error().kind, "listen on " + o.listen + ": " + server.error().message};
  impl->server = std::move(*server);
  std::string host = addr->ipv6 ? "[" + addr->host + "]" : addr->host;
  impl->address = host + ":" + std::to_string(impl->server->port());
  impl->server->start();
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

Status ApiServer::add_listener(int listen_fd) {
  Impl* raw = impl_.get();
  auto server = http::Server::adopt(
      listen_fd, [raw](const http::Request& req, http::Connection& conn) { return raw->dispatch(req, conn); });
  if (!server) return server.error();
  (*server)->start();
  std::lock_guard lock(impl_->extra_mu);
  impl_->extra_servers.push_back(std::move(*server));
  return {};
}

uint16_t ApiServer::port() const { return impl_->server->port(); }
std::string ApiServer::address() const { return impl_->address; }
std::string ApiServer::url() const { return "http://" + impl_->address; }
Store& ApiServer::store() { return impl_->store; }
Faults& ApiServer::faults() { return impl_->faults; }
ContinueTokens& ApiServer::continue_tokens() { return impl_->tokens; }

void ApiServer::stop() {
  if (!impl_ || !impl_->server) return;
  // Wake the watches first: they wait on the store, not on their sockets.
  impl_->store.stop();
  impl_->server->stop();
  std::lock_guard lock(impl_->extra_mu);
  for (auto& s : impl_->extra_servers) s->stop();
}

Status run(const Options& o, std::ostream& out) {
  // Block the signals before any thread starts, so that every thread
  // inherits the mask and only sigwait() below receives them.
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  auto server = ApiServer::start(o);
  if (!server) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return server.error();
  }
  out << "listening on " << (*server)->address() << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  (*server)->stop();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return {};
}

}  // namespace kpx::apiserver
