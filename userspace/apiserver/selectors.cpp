#include "apiserver/selectors.h"

#include <algorithm>
#include <cctype>

namespace kpx::apiserver {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Split on commas that are not inside parentheses ("a in (x,y),b").
std::vector<std::string_view> split_terms(std::string_view s) {
  std::vector<std::string_view> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || (s[i] == ',' && depth == 0)) {
      out.push_back(trim(s.substr(start, i - start)));
      start = i + 1;
    } else if (s[i] == '(') {
      ++depth;
    } else if (s[i] == ')') {
      --depth;
    }
  }
  return out;
}

// Qualified names: an optional DNS-subdomain prefix and '/', then up to 63
// characters of [A-Za-z0-9_.-] starting and ending alphanumeric.
bool valid_key(std::string_view k) {
  if (k.empty() || k.size() > 316) return false;
  return std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/';
  });
}

bool valid_value(std::string_view v) {
  if (v.size() > 63) return false;
  return std::all_of(v.begin(), v.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

ApiStatus parse_error(std::string_view term, const std::string& why) {
  return bad_request_status("unable to parse requirement: " + std::string(term) + ": " + why);
}

// The value of a dotted field path as a field selector compares it: strings
// as they are, booleans and numbers printed, missing as "".
std::string field_value(const Json& obj, const std::string& path) {
  const Json* cur = &obj;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur->is_object()) return "";
    auto it = cur->find(part);
    if (it == cur->end()) return "";
    cur = &*it;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (cur->is_string()) return cur->get<std::string>();
  if (cur->is_null()) return "";
  return cur->dump();
}

std::vector<std::string> supported_fields(const ResourceType& t) {
  std::vector<std::string> f = {"metadata.name"};
  if (t.namespaced) f.push_back("metadata.namespace");
  if (t.name == "pods")
    f.insert(f.end(), {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                       "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"});
  if (t.name == "services") f.insert(f.end(), {"spec.clusterIP", "spec.type"});
  if (t.name == "nodes") f.push_back("spec.unschedulable");
  if (t.name == "namespaces") f.push_back("status.phase");
  return f;
}

}  // namespace

ApiResult<LabelSelector> LabelSelector::parse(std::string_view text) {
  LabelSelector sel;
  if (trim(text).empty()) return sel;
  using Op = Requirement::Op;
  for (std::string_view term : split_terms(text)) {
    if (term.empty()) return parse_error(term, "empty requirement");
    Requirement r;
    size_t paren = term.find('(');
    if (paren != std::string_view::npos) {
      // key in (a,b) / key notin (a,b)
      if (term.back() != ')') return parse_error(term, "expected ')'");
      std::string_view head = trim(term.substr(0, paren));
      size_t sp = head.find_last_of(" \t");
      if (sp == std::string_view::npos) return parse_error(term, "expected 'in' or 'notin'");
      std::string_view op = head.substr(sp + 1);
      if (op == "in") {
        r.op = Op::kIn;
      } else if (op == "notin") {
        r.op = Op::kNotIn;
      } else {
        return parse_error(term, "expected 'in' or 'notin'");
      }
      r.key = std::string(trim(head.substr(0, sp)));
      std::string_view inner = term.substr(paren + 1, term.size() - paren - 2);
      for (std::string_view v : split_terms(inner)) {
        if (!valid_value(v)) return parse_error(term, "invalid label value '" + std::string(v) + "'");
        r.values.emplace_back(v);
      }
    } else if (term.front() == '!') {
      r.op = Op::kNotExists;
      r.key = std::string(trim(term.substr(1)));
    } else if (size_t ne = term.find("!="); ne != std::string_view::npos) {
      r.op = Op::kNotEquals;
      r.key = std::string(trim(term.substr(0, ne)));
      r.values.emplace_back(trim(term.substr(ne + 2)));
    } else if (size_t eq = term.find('='); eq != std::string_view::npos) {
      r.op = Op::kEquals;
      r.key = std::string(trim(term.substr(0, eq)));
      size_t vstart = eq + 1;
      if (vstart < term.size() && term[vstart] == '=') ++vstart;
      r.values.emplace_back(trim(term.substr(vstart)));
    } else {
      r.op = Op::kExists;
      r.key = std::string(term);
    }
    if (!valid_key(r.key)) return parse_error(term, "invalid label key '" + r.key + "'");
    for (const auto& v : r.values)
      if (!valid_value(v)) return parse_error(term, "invalid label value '" + v + "'");
    sel.reqs_.push_back(std::move(r));
  }
  return sel;
}

bool LabelSelector::matches(const Json& labels) const {
  using Op = Requirement::Op;
  for (const auto& r : reqs_) {
    const std::string* value = nullptr;
    std::string holder;
    if (labels.is_object()) {
      auto it = labels.find(r.key);
      if (it != labels.end() && it->is_string()) {
        holder = it->get<std::string>();
        value = &holder;
      }
    }
    auto in_values = [&] {
      return value && std::find(r.values.begin(), r.values.end(), *value) != r.values.end();
    };
    bool ok = false;
    switch (r.op) {
      case Op::kExists:
        ok = value != nullptr;
        break;
      case Op::kNotExists:
        ok = value == nullptr;
        break;
      case Op::kEquals:
        ok = value && *value == r.values[0];
        break;
      case Op::kNotEquals:
        ok = !value || *value != r.values[0];
        break;
      case Op::kIn:
        ok = in_values();
        break;
      case Op::kNotIn:
        ok = !in_values();
        break;
    }
    if (!ok) return false;
  }
  return true;
}

ApiResult<FieldSelector> FieldSelector::parse(std::string_view text, const ResourceType& type) {
  FieldSelector sel;
  if (trim(text).empty()) return sel;
  auto fields = supported_fields(type);
  for (std::string_view term : split_terms(text)) {
    Requirement r;
    size_t op = term.find("!=");
    size_t vstart;
    if (op != std::string_view::npos) {
      r.negate = true;
      vstart = op + 2;
    } else if ((op = term.find('=')) != std::string_view::npos) {
      r.negate = false;
      vstart = op + 1;
      if (vstart < term.size() && term[vstart] == '=') ++vstart;
    } else {
      return bad_request_status("invalid field selector: '" + std::string(term) + "': expected an operator");
    }
    r.field = std::string(trim(term.substr(0, op)));
    r.value = std::string(trim(term.substr(vstart)));
    if (std::find(fields.begin(), fields.end(), r.field) == fields.end())
      return bad_request_status("field label not supported: " + r.field);
    sel.reqs_.push_back(std::move(r));
  }
  return sel;
}

bool FieldSelector::matches(const Json& object) const {
  for (const auto& r : reqs_)
    if ((field_value(object, r.field) == r.value) == r.negate) return false;
  return true;
}

bool Selector::matches(const Json& object) const {
  if (!labels.empty()) {
    const Json* l = nullptr;
    auto m = object.find("metadata");
    if (m != object.end() && m->is_object()) {
      auto it = m->find("labels");
      if (it != m->end()) l = &*it;
    }
    static const Json kNone;
    if (!labels.matches(l ? *l : kNone)) return false;
  }
  return fields.matches(object);
}

}  // namespace kpx::apiserver
