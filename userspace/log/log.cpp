#include "log/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace kpx::log {

namespace {

std::atomic<int> g_verbosity{0};
std::mutex g_mu;  // one line at a time; guards g_sink
Sink g_sink;

char level_letter(Level l) {
  switch (l) {
    case Level::kError:
      return 'E';
    case Level::kWarning:
      return 'W';
    case Level::kInfo:
      return 'I';
    case Level::kDebug:
      return 'D';
  }
  return '?';
}

// "2024-05-01T12:00:00.123Z"
std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

}  // namespace

void set_verbosity(int v) { g_verbosity = v; }
int verbosity() { return g_verbosity; }

void set_sink(Sink sink) {
  std::lock_guard lk(g_mu);
  g_sink = std::move(sink);
}

void write(Level level, std::string_view message) {
  std::lock_guard lk(g_mu);
  if (g_sink) {
    g_sink(level, message);
    return;
  }
  std::string line = timestamp();
  line += ' ';
  line += level_letter(level);
  line += ' ';
  line += message;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

void debug(int v, std::string_view m) {
  if (g_verbosity >= v) write(Level::kDebug, m);
}

}  // namespace kpx::log
