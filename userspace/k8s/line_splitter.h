// Splits a byte stream into lines as the chunks of a watch arrive: a chunk
// may hold half a line or several, and a line may span many chunks.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace kpx::k8s {

class LineSplitter {
 public:
  void append(std::string_view bytes) { pending_.append(bytes); }

  // The next complete line without its "\n" (and "\r"); blank lines are
  // skipped. nullopt until more bytes complete one.
  std::optional<std::string> next() {
    for (;;) {
      size_t nl = pending_.find('\n', scanned_);
      if (nl == std::string::npos) {
        pending_.erase(0, start_);  // keep only the unfinished line
        start_ = 0;
        scanned_ = pending_.size();
        return std::nullopt;
      }
      size_t end = nl;
      if (end > start_ && pending_[end - 1] == '\r') --end;
      std::string line = pending_.substr(start_, end - start_);
      start_ = scanned_ = nl + 1;
      if (line.find_first_not_of(" \t") != std::string::npos) return line;
    }
  }

  // Bytes of an unfinished line (0 when the stream stopped between lines).
  size_t unfinished() const {
    std::string_view rest = std::string_view(pending_).substr(start_);
    return rest.find_first_not_of(" \t\r\n") == std::string_view::npos ? 0 : rest.size();
  }

 private:
  std::string pending_;
  size_t start_ = 0;    // where the unfinished line begins
  size_t scanned_ = 0;  // no '\n' before this offset after start_
};

}  // namespace kpx::k8s
