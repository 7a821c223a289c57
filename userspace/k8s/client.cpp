#include "k8s/client.h"

#include <cpprest/http_client.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/ssl.hpp>
#include <fstream>
#include <optional>
#include <sstream>

#include "k8s/bearer_token.h"
#include "k8s/line_splitter.h"
#include "k8s/rate_limiter.h"
#include "log/log.h"

namespace kpx::k8s {

namespace http = web::http;
using nlohmann::json;

namespace {

// A watch line longer than this is not an event but a broken stream.
constexpr size_t kMaxEventBytes = 64u << 20;

// PEM text of the CA and the client certificate and key, read once.
struct TlsMaterial {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
};

Result<std::string> read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(what + " file " + path + " cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// data if set, else the file's contents, else "".
Result<std::string> data_or_file(const std::string& data, const std::string& file, const std::string& what) {
  if (!data.empty()) return data;
  if (file.empty()) return std::string();
  return read_file(file, what);
}

// Puts the material into an OpenSSL context; the error names the part that
// is wrong.
std::optional<std::string> apply_tls(const TlsMaterial& m, boost::asio::ssl::context& ctx) {
  boost::system::error_code ec;
  if (!m.ca_pem.empty()) {
    // Trust the cluster's CA only, not the system's store (as client-go).
    SSL_CTX_set_cert_store(ctx.native_handle(), X509_STORE_new());
    ctx.add_certificate_authority(boost::asio::buffer(m.ca_pem), ec);
    if (ec) return "certificate authority: not a PEM certificate (" + ec.message() + ")";
  }
  if (!m.cert_pem.empty()) {
    ctx.use_certificate_chain(boost::asio::buffer(m.cert_pem), ec);
    if (ec) return "client certificate: not a PEM certificate (" + ec.message() + ")";
    ctx.use_private_key(boost::asio::buffer(m.key_pem), boost::asio::ssl::context::pem, ec);
    if (ec && ec.message().find("mismatch") != std::string::npos)
      return "client key: does not match the client certificate";
    if (ec) return "client key: not a PEM private key (" + ec.message() + ")";
  }
  return std::nullopt;
}

std::string string_field(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

std::chrono::seconds parse_retry_after(const http::http_headers& headers, const json& status) {
  auto it = headers.find("Retry-After");
  if (it != headers.end()) {
    const std::string& v = it->second;
    if (!v.empty() && v.size() < 9 && v.find_first_not_of("0123456789") == std::string::npos)
      return std::chrono::seconds(std::stol(v));
  }
  // The Status says it too: details.retryAfterSeconds.
  auto details = status.find("details");
  if (details != status.end() && details->is_object()) {
    auto s = details->find("retryAfterSeconds");
    if (s != details->end() && s->is_number_integer() && s->get<int64_t>() > 0)
      return std::chrono::seconds(s->get<int64_t>());
  }
  return std::chrono::seconds(0);
}

// The ApiError of a non-2xx answer from its Status body.
ApiError error_of(int code, const http::http_headers& headers, const std::string& body,
                  const std::string& request) {
  ApiError e;
  e.code = code;
  e.request = request;
  json status = json::parse(body, nullptr, false);
  if (status.is_object() && string_field(status, "kind") == "Status") {
    e.reason = string_field(status, "reason");
    e.message = string_field(status, "message");
    auto details = status.find("details");
    if (details != status.end() && details->is_object()) {
      auto causes = details->find("causes");
      if (causes != details->end() && causes->is_array() && !causes->empty() && causes->front().is_object())
        e.cause = string_field(causes->front(), "reason");
    }
  } else {
    e.message = body.size() > 200 ? body.substr(0, 200) + "..." : body;
  }
  if (e.message.empty()) e.message = "the server answered " + std::to_string(code);
  e.retry_after = parse_retry_after(headers, status.is_object() ? status : json::object());
  return e;
}

ApiError local_error(const std::string& request, std::string message) {
  ApiError e;
  e.request = request;
  e.message = std::move(message);
  return e;
}

// Closes the connection of a request when the call returns, whether or not
// its body was read to the end (a watch left streaming would run on).
class CancelOnExit {
 public:
  explicit CancelOnExit(pplx::cancellation_token_source& cts) : cts_(cts) {}
  ~CancelOnExit() { cts_.cancel(); }
  CancelOnExit(const CancelOnExit&) = delete;
  CancelOnExit& operator=(const CancelOnExit&) = delete;

 private:
  pplx::cancellation_token_source& cts_;
};

}  // namespace

std::string query_escape(const std::string& value) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

struct Client::Impl {
  ClientConfig config;
  ClientOptions options;
  BearerToken token;
  std::unique_ptr<http::client::http_client> requests;  // request_timeout
  std::unique_ptr<http::client::http_client> watches;   // watch_idle_timeout
  std::unique_ptr<RateLimiter> limiter;                 // null: no limit

  // Sends one request and waits for the answer's head; the body is read by
  // the caller. A 401 with a token file re-reads the file and tries once more.
  ApiResult<http::http_response> start(http::client::http_client& client, const http::method& method,
                                       const std::string& path, const json* body,
                                       const pplx::cancellation_token& cancel, const std::string& what);
};

ApiResult<http::http_response> Client::Impl::start(http::client::http_client& client,
                                                   const http::method& method, const std::string& path,
                                                   const json* body, const pplx::cancellation_token& cancel,
                                                   const std::string& what) {
  for (int attempt = 0;; ++attempt) {
    auto bearer = token.get();
    if (!bearer) return local_error(what, bearer.error().message);
    http::http_response response;
    try {
      http::http_request req(method);
      req.set_request_uri(path);
      req.headers().add("Accept", "application/json");
      req.headers().add("User-Agent", options.user_agent);
      if (!bearer->empty()) req.headers().add("Authorization", "Bearer " + *bearer);
      if (body && !body->is_null())
        req.set_body(body->dump(),
                     method == http::methods::PATCH ? "application/merge-patch+json" : "application/json");
      response = client.request(req, cancel).get();
    } catch (const pplx::task_canceled&) {
      return local_error(what, "cancelled");
    } catch (const std::exception& e) {
      // cpprestsdk reports connection, TLS and timeout failures by throwing.
      return local_error(what, std::string("no answer from ") + config.server + ": " + e.what());
    }
    if (response.status_code() == http::status_codes::Unauthorized && attempt == 0 && token.invalidate()) {
      log::warning(what + ": 401 Unauthorized; re-reading the token file " + token.path() + " and retrying");
      continue;
    }
    return response;
  }
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::create(const ClientConfig& config, const ClientOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->options = options;
  if (options.qps > 0) impl->limiter = std::make_unique<RateLimiter>(options.qps, options.burst);
  if (!config.token.empty()) {
    impl->token = BearerToken::fixed(config.token);
  } else if (!config.token_file.empty()) {
    impl->token = BearerToken::from_file(config.token_file, options.token_max_age);
    auto first = impl->token.get();
    if (!first) return first.error();
  }

  bool https = config.server.rfind("https://", 0) == 0;
  if (!https && config.server.rfind("http://", 0) != 0)
    return invalid_argument("API server \"" + config.server + "\" is not an http:// or https:// URL");

  auto tls = std::make_shared<TlsMaterial>();
  if (https) {
    auto ca = data_or_file(config.ca_data, config.ca_file, "certificate authority");
    if (!ca) return ca.error();
    auto cert = data_or_file(config.client_cert_data, config.client_cert_file, "client certificate");
    if (!cert) return cert.error();
    auto key = data_or_file(config.client_key_data, config.client_key_file, "client key");
    if (!key) return key.error();
    tls->ca_pem = std::move(*ca);
    tls->cert_pem = std::move(*cert);
    tls->key_pem = std::move(*key);
    if (tls->cert_pem.empty() != tls->key_pem.empty())
      return invalid_argument("a client certificate needs its key, and a key its certificate");
    // Check the material now: the connection-time callback cannot fail cleanly.
    boost::asio::ssl::context probe(boost::asio::ssl::context::tls_client);
    if (auto bad = apply_tls(*tls, probe))
      return invalid_argument("TLS configuration" +
                              (config.source.empty() ? "" : " (" + config.source + ")") + ": " + *bad);
  }

  auto make = [&](std::chrono::seconds timeout) {
    http::client::http_client_config c;
    c.set_timeout(timeout);
    // No proxy from the environment: the API server is reached directly.
    c.set_proxy(web::web_proxy(web::web_proxy::disabled));
    if (https) {
      c.set_validate_certificates(!config.insecure_skip_tls_verify);
      c.set_ssl_context_callback([tls](boost::asio::ssl::context& ctx) {
        if (auto bad = apply_tls(*tls, ctx)) log::error("TLS configuration: " + *bad);
      });
    }
    return std::make_unique<http::client::http_client>(web::uri(config.server), c);
  };
  try {
    impl->requests = make(options.request_timeout);
    impl->watches = make(options.watch_idle_timeout);
  } catch (const std::exception& e) {
    return invalid_argument("API server \"" + config.server + "\": " + e.what());
  }
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const std::string& Client::server() const { return impl_->config.server; }

ApiResult<json> Client::get(const std::string& path_and_query, std::stop_token stop) {
  return send("GET", path_and_query, json(), std::move(stop));
}

ApiResult<json> Client::send(const std::string& method, const std::string& path_and_query, const json& body,
                             std::stop_token stop) {
  return request(method, path_and_query, body, nullptr, stop);
}

ApiResult<json> Client::list(const std::string& path_and_query, const ItemSink& on_item,
                             std::stop_token stop) {
  return request("GET", path_and_query, json(), &on_item, stop);
}

ApiResult<json> Client::request(const std::string& method, const std::string& path_and_query,
                                const json& body, const ItemSink* on_item, std::stop_token stop) {
  const std::string what = method + " " + path_and_query;
  if (impl_->limiter && !impl_->limiter->wait(stop)) return local_error(what, "cancelled");
  pplx::cancellation_token_source cts;
  std::stop_callback on_stop(stop, [&cts] { cts.cancel(); });
  // No CancelOnExit: the body is always read to its end, and the connection
  // goes back to the pool.
  auto response = impl_->start(*impl_->requests, method, path_and_query, &body, cts.get_token(), what);
  if (!response) return response.error();
  std::string text;
  try {
    text = response->extract_utf8string(true).get();
  } catch (const std::exception& e) {
    return local_error(what, std::string("reading the answer: ") + e.what());
  }
  int code = response->status_code();
  if (code < 200 || code > 299) return error_of(code, response->headers(), text, what);
  if (!on_item) {
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return local_error(what, "the answer is not JSON");
    return j;
  }
  // Each element of the top-level "items" is handed over as soon as it is
  // complete and discarded from the tree (depth 2: root, "items", item).
  std::string top_key;
  json j = json::parse(
      text,
      [&](int depth, json::parse_event_t ev, json& parsed) {
        if (ev == json::parse_event_t::key && depth == 1) top_key = parsed.get<std::string>();
        if (depth == 2 && top_key == "items" && ev == json::parse_event_t::object_end) {
          (*on_item)(std::move(parsed));
          return false;
        }
        return true;
      },
      false);
  if (j.is_discarded()) return local_error(what, "the answer is not JSON");
  return j;
}

ApiResult<json> Client::version() { return get("/version"); }

ApiResult<WatchEnd> Client::watch(const std::string& path_and_query, const WatchHandler& on_event,
                                  std::stop_token stop) {
  const std::string what = "GET " + path_and_query;
  pplx::cancellation_token_source cts;
  std::stop_callback on_stop(stop, [&cts] { cts.cancel(); });
  CancelOnExit close(cts);
  if (impl_->limiter && !impl_->limiter->wait(stop)) return WatchEnd::kStopped;
  auto response =
      impl_->start(*impl_->watches, http::methods::GET, path_and_query, nullptr, cts.get_token(), what);
  if (!response) {
    if (stop.stop_requested()) return WatchEnd::kStopped;
    return response.error();
  }
  int code = response->status_code();
  if (code != 200) {
    std::string text;
    try {
      text = response->extract_utf8string(true).get();
    } catch (const std::exception&) {
      // The code alone still says what happened.
    }
    return error_of(code, response->headers(), text, what);
  }

  // The body streams in as the server writes it. Wait for one byte, then take
  // whatever else has arrived: reads never wait for more than is there.
  auto body = response->body().streambuf();
  using Traits = std::remove_reference_t<decltype(body)>::traits;
  LineSplitter lines;
  std::vector<uint8_t> buf(64 * 1024);
  try {
    for (;;) {
      if (stop.stop_requested()) return WatchEnd::kStopped;
      size_t avail = body.in_avail();
      if (avail == 0) {
        // getc() peeks: it waits for a byte (or the end) without taking it.
        if (body.getc().get() == Traits::eof()) break;
        continue;
      }
      size_t n = body.getn(buf.data(), std::min(avail, buf.size())).get();
      lines.append(std::string_view(reinterpret_cast<const char*>(buf.data()), n));
      while (auto line = lines.next()) {
        json event = json::parse(*line, nullptr, false);
        if (!event.is_object()) return local_error(what, "undecodable watch event: " + line->substr(0, 200));
        if (!on_event(event)) return WatchEnd::kByHandler;
      }
      if (lines.unfinished() > kMaxEventBytes) return local_error(what, "watch event longer than 64 MiB");
    }
  } catch (const std::exception& e) {
    if (stop.stop_requested()) return WatchEnd::kStopped;
    return local_error(what, std::string("watch stream broke: ") + e.what());
  }
  if (stop.stop_requested()) return WatchEnd::kStopped;
  // The end of the body is clean only if the chunked encoding ended properly.
  try {
    response->content_ready().get();
  } catch (const std::exception& e) {
    return local_error(what, std::string("watch stream broke: ") + e.what());
  }
  if (lines.unfinished() > 0) return local_error(what, "watch stream ended in the middle of an event");
  return WatchEnd::kClosed;
}

}  // namespace kpx::k8s
