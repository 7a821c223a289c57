#include "lab/http_get.h"

#include <algorithm>
#include <cstdlib>

namespace kpx::lab {

std::string http_get_command(const std::string& host, uint16_t port, const std::string& path) {
  // printf, not echo: the request must end its lines with CR LF.
  // (bash reports a refused connect itself: quiet around the whole exec.)
  return "{ exec 3<>/dev/tcp/" + host + "/" + std::to_string(port) + "; } 2>/dev/null || exit 7; printf \"GET " + path +
         " HTTP/1.1\\r\\nHost: " + host + "\\r\\nConnection: close\\r\\n\\r\\n\" >&3 && timeout 5 cat <&3";
}

HttpAnswer parse_http_answer(const std::string& raw) {
  HttpAnswer a;
  const size_t head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/", 0) != 0 || head_end == std::string::npos) return a;
  const std::string head = raw.substr(0, head_end);
  size_t eol = head.find("\r\n");
  a.status_line = head.substr(0, eol);
  const size_t sp = a.status_line.find(' ');
  a.code = sp == std::string::npos ? 0 : std::atoi(a.status_line.c_str() + sp + 1);
  while (eol != std::string::npos) {
    const size_t next = head.find("\r\n", eol + 2);
    const std::string line = head.substr(eol + 2, next == std::string::npos ? std::string::npos : next - eol - 2);
    const size_t colon = line.find(':');
    if (colon != std::string::npos)
      a.headers[line.substr(0, colon)] = line.substr(std::min(line.size(), line.find_first_not_of(' ', colon + 1)));
    eol = next;
  }
  a.body = raw.substr(head_end + 4);
  return a;
}

}  // namespace kpx::lab
