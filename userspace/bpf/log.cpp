#include "bpf/log.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>

namespace kpx::bpf {

namespace {

thread_local int quiet_depth = 0;

int print(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG || quiet_depth > 0) return 0;
  return vfprintf(stderr, fmt, args);
}

}  // namespace

void install_libbpf_logging() { libbpf_set_print(print); }

QuietLibbpf::QuietLibbpf() { ++quiet_depth; }
QuietLibbpf::~QuietLibbpf() { --quiet_depth; }

}  // namespace kpx::bpf
