// A minimal leveled log to stderr with UTC timestamps, for the daemon's
// long-running parts (API client, reflectors):
//   2024-05-01T12:00:00.123Z W reflector services: watch dropped: ...
// Debug lines are written at verbosity >= their level (the -v flag).
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace kpx::log {

enum class Level { kError, kWarning, kInfo, kDebug };

// 0 (default): errors, warnings and info; n > 0: also debug(v) with v <= n.
void set_verbosity(int v);
int verbosity();

// Replaces the stderr writer (tests capture lines with it); an empty
// function restores stderr. The sink gets the message without timestamp.
using Sink = std::function<void(Level, std::string_view message)>;
void set_sink(Sink sink);

void write(Level level, std::string_view message);
inline void error(std::string_view m) { write(Level::kError, m); }
inline void warning(std::string_view m) { write(Level::kWarning, m); }
inline void info(std::string_view m) { write(Level::kInfo, m); }
// Written only when verbosity() >= v (v >= 1).
void debug(int v, std::string_view m);

}  // namespace kpx::log
