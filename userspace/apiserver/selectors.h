// Label selectors (key, !key, key=value, key==value, key!=value,
// key in (a,b), key notin (a,b); comma-separated, all must hold) and field
// selectors (metadata.name, metadata.namespace and a few per-type fields, with
// =, == and !=), as the real server parses them from list and watch queries.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "apiserver/api_status.h"
#include "apiserver/resources.h"

namespace kpx::apiserver {

class LabelSelector {
 public:
  static ApiResult<LabelSelector> parse(std::string_view text);
  // labels: the object's metadata.labels (null or an object of strings).
  bool matches(const Json& labels) const;
  bool empty() const { return reqs_.empty(); }

 private:
  struct Requirement {
    enum class Op { kExists, kNotExists, kEquals, kNotEquals, kIn, kNotIn } op;
    std::string key;
    std::vector<std::string> values;
  };
  std::vector<Requirement> reqs_;
};

class FieldSelector {
 public:
  static ApiResult<FieldSelector> parse(std::string_view text, const ResourceType& type);
  bool matches(const Json& object) const;
  bool empty() const { return reqs_.empty(); }

 private:
  struct Requirement {
    std::string field;  // dotted path: "metadata.name"
    std::string value;
    bool negate;
  };
  std::vector<Requirement> reqs_;
};

// Both selectors of one request.
struct Selector {
  LabelSelector labels;
  FieldSelector fields;
  bool matches(const Json& object) const;
  bool empty() const { return labels.empty() && fields.empty(); }
};

}  // namespace kpx::apiserver
