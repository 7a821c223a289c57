// HTTP from inside the lab's namespaces with nothing to install: a GET as a
// bash command line (its /dev/tcp), to run with `kpx lab exec TARGET -- bash
// -c ...`, and the answer parsed. The health check node ports are probed so.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace kpx::lab {

// "Connection: close": the server's close ends the output. Without single
// quotes, so that a caller may quote it again.
std::string http_get_command(const std::string& host, uint16_t port, const std::string& path = "/");

struct HttpAnswer {
  int code = 0;  // 0: no answer
  std::string status_line;                     // "HTTP/1.1 200 OK"
  std::map<std::string, std::string> headers;  // names as sent
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};
HttpAnswer parse_http_answer(const std::string& raw);

}  // namespace kpx::lab
