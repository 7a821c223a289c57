#include "k8s/time.h"

#include <cctype>

namespace kpx::k8s {

namespace {

// n decimal digits at s[pos]; advances pos.
std::optional<int> digits(std::string_view s, size_t& pos, size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  pos += n;
  return v;
}

bool expect(std::string_view s, size_t& pos, char c) {
  if (pos >= s.size() || s[pos] != c) return false;
  ++pos;
  return true;
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view s) {
  using namespace std::chrono;
  size_t pos = 0;
  auto year = digits(s, pos, 4);
  if (!year || !expect(s, pos, '-')) return std::nullopt;
  auto mon = digits(s, pos, 2);
  if (!mon || !expect(s, pos, '-')) return std::nullopt;
  auto day = digits(s, pos, 2);
  if (!day || !expect(s, pos, 'T')) return std::nullopt;
  auto hour = digits(s, pos, 2);
  if (!hour || !expect(s, pos, ':')) return std::nullopt;
  auto min = digits(s, pos, 2);
  if (!min || !expect(s, pos, ':')) return std::nullopt;
  auto sec = digits(s, pos, 2);
  if (!sec || *hour > 23 || *min > 59 || *sec > 59) return std::nullopt;
  year_month_day ymd{std::chrono::year{*year}, month{static_cast<unsigned>(*mon)}, std::chrono::day{static_cast<unsigned>(*day)}};
  if (!ymd.ok()) return std::nullopt;

  nanoseconds frac{0};
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t n = 0;
    int64_t v = 0;
    for (; pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos])); ++pos, ++n)
      if (n < 9) v = v * 10 + (s[pos] - '0');  // beyond nanoseconds: truncated
    if (n == 0) return std::nullopt;
    for (size_t i = n; i < 9; ++i) v *= 10;
    frac = nanoseconds(v);
  }

  minutes offset{0};
  if (expect(s, pos, 'Z')) {
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    const int sign = s[pos++] == '-' ? -1 : 1;
    auto oh = digits(s, pos, 2);
    if (!oh || !expect(s, pos, ':')) return std::nullopt;
    auto om = digits(s, pos, 2);
    if (!om || *oh > 23 || *om > 59) return std::nullopt;
    offset = minutes(sign * (*oh * 60 + *om));
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;

  auto t = sys_days(ymd) + hours(*hour) + minutes(*min) + seconds(*sec) + frac - offset;
  return time_point_cast<system_clock::duration>(t);
}

}  // namespace kpx::k8s
