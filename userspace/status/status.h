// Error returns across module boundaries (absl::Status-like, no exceptions).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace kpx {

enum class ErrorKind {
  kInvalidArgument,  // bad user input: the CLI exits 2
  kNotFound,
  kSystem,           // a syscall or libbpf call failed
  kFailedPrecondition, // state on the machine kpx will not use as it is (pins of another ABI)
};

struct Error {
  ErrorKind kind;
  std::string message;
};

inline Error invalid_argument(std::string m) { return {ErrorKind::kInvalidArgument, std::move(m)}; }
inline Error not_found(std::string m) { return {ErrorKind::kNotFound, std::move(m)}; }
inline Error failed_precondition(std::string m) { return {ErrorKind::kFailedPrecondition, std::move(m)}; }
inline Error system_error(std::string m) { return {ErrorKind::kSystem, std::move(m)}; }
// A system error built from a negative errno as libbpf returns it.
Error errno_error(const std::string& what, int err);

// A value or an error. E is Error across kpx's modules; the API client and
// server use their own error types (k8s::ApiError, apiserver::ApiStatus).
template <typename T, typename E = Error>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(E e) : v_(std::move(e)) {}          // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const E& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, E> v_;
};

template <>
class [[nodiscard]] Result<void, Error> {
 public:
  Result() = default;
  Result(Error e) : e_(std::move(e)) {}  // NOLINT
  bool ok() const { return !e_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return *e_; }

 private:
  std::optional<Error> e_;
};

using Status = Result<void>;

}  // namespace kpx

// Propagate an error from an expression returning a Result.
#define KPX_TRY(expr)                         \
  do {                                        \
    auto kpx_try_r_ = (expr);                 \
    if (!kpx_try_r_.ok()) return kpx_try_r_.error(); \
  } while (0)
