#include "net/socket.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>

#include "net/netns.h"

namespace kpx::net {

sockaddr_in ipv4_sockaddr(uint32_t addr_be, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = addr_be;
  return a;
}

Result<bpf::UniqueFd> bound_socket(int type, uint32_t addr_be, uint16_t port) {
  bpf::UniqueFd fd(socket(AF_INET, type | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno_error("socket", errno);
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = ipv4_sockaddr(addr_be, port);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return errno_error("bind port " + std::to_string(port), errno);
  if (type == SOCK_STREAM && listen(fd.get(), 128) != 0) return errno_error("listen", errno);
  return fd;
}

Result<bpf::UniqueFd> bound_socket_in_netns(const std::string& netns, int type, uint32_t addr_be, uint16_t port) {
  auto scope = NetnsScope::enter(netns);
  if (!scope) return scope.error();
  auto fd = bound_socket(type, addr_be, port);
  if (!fd) return Error{fd.error().kind, fd.error().message + " in " + netns};
  return fd;
}

}  // namespace kpx::net
