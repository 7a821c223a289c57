// libbpf's messages: warnings to stderr, debug output dropped, and a scope
// that silences calls whose failure is expected and handled.
#pragma once

namespace kpx::bpf {

void install_libbpf_logging();

class QuietLibbpf {
 public:
  QuietLibbpf();
  ~QuietLibbpf();
  QuietLibbpf(const QuietLibbpf&) = delete;
  QuietLibbpf& operator=(const QuietLibbpf&) = delete;
};

}  // namespace kpx::bpf
