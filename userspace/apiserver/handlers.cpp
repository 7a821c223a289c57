#include "apiserver/handlers.h"

#include "apiserver/graceful_delete.h"
#include "apiserver/media.h"
#include "apiserver/strategy.h"
#include "apiserver/table.h"

namespace kpx::apiserver {

namespace {

std::string meta_string(const Json& obj, const char* field) {
  auto m = obj.find("metadata");
  return m == obj.end() ? "" : string_at(*m, field);
}

bool is_decimal(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// The object with kind and apiVersion first, as the real serializer writes it.
Json normalized(const ResourceType& t, const Json& body) {
  Json out = Json::object();
  out["kind"] = t.kind;
  out["apiVersion"] = t.api_version();
  out["metadata"] =
      body.contains("metadata") && body["metadata"].is_object() ? body["metadata"] : Json::object();
  for (const auto& [k, v] : body.items())
    if (k != "kind" && k != "apiVersion" && k != "metadata") out[k] = v;
  return out;
}

ApiResult<Json> parse_body(const http::Request& req) {
  std::string ct = media_type(req.header("content-type"));
  if (!ct.empty() && ct != "application/json") return unsupported_media_type_status(ct);
  Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return bad_request_status("the body of the request could not be decoded as a JSON object");
  return body;
}

// kind and apiVersion, when the body names them, must be the resource's.
std::optional<ApiStatus> check_type(const ResourceType& t, const Json& body) {
  if (body.contains("apiVersion") && body["apiVersion"] != t.api_version())
    return bad_request_status("the API version in the data (" + body["apiVersion"].dump() +
                              ") does not match the expected API version (" + t.api_version() + ")");
  if (body.contains("kind") && body["kind"] != t.kind)
    return bad_request_status("the kind in the data (" + body["kind"].dump() +
                              ") does not match the expected kind (" + t.kind + ")");
  return std::nullopt;
}

std::optional<ApiStatus> check_namespace(const ResourceType& t, const ResourcePath& path, Json& body) {
  Json& meta = body["metadata"];
  if (!meta.is_object()) meta = Json::object();
  if (!t.namespaced) {
    meta.erase("namespace");
    return std::nullopt;
  }
  std::string ns = string_at(meta, "namespace");
  if (!ns.empty() && ns != path.ns)
    return bad_request_status(
        "the namespace of the provided object does not match the namespace sent on the request");
  meta["namespace"] = path.ns;
  return std::nullopt;
}

ApiStatus rv_conflict(const ResourceType& t, const std::string& name) {
  return conflict_status(
      t.qualified(), t.group, name,
      "the object has been modified; please apply your changes to the latest version and try again");
}

http::Response object_response(int code, const ResourceType& t, const Json& obj, const http::Request& req) {
  Representation rep = negotiate(req.header("accept"), true);
  if (rep == Representation::kNone) return status_response(not_acceptable_status());
  if (rep == Representation::kTable)
    return json_response(code, table_for(t, {obj}, "", "", req.query_value("includeObject")));
  return json_response(code, obj);
}

}  // namespace

ApiResult<Selector> parse_selector(const ResourceType& t, const http::Request& req) {
  auto labels = LabelSelector::parse(req.query_value("labelSelector"));
  if (!labels) return labels.error();
  auto fields = FieldSelector::parse(req.query_value("fieldSelector"), t);
  if (!fields) return fields.error();
  return Selector{std::move(*labels), std::move(*fields)};
}

http::Response ObjectHandlers::handle(const ResourcePath& path, const http::Request& req) {
  const ResourceType& t = *path.type;
  bool collection = path.name.empty();
  // A namespaced object is only addressed within its namespace.
  if (!collection && t.namespaced && path.ns.empty()) return status_response(path_not_found_status());
  if (req.method == "GET") return collection ? list(path, req) : get(path, req);
  if (req.method == "POST") {
    if (!collection || (t.namespaced && path.ns.empty()) || !path.subresource.empty())
      return status_response(method_not_allowed_status());
    return create(path, req);
  }
  if (collection) return status_response(method_not_allowed_status());
  if (req.method == "PUT") return replace(path, req);
  if (req.method == "PATCH") return patch(path, req);
  if (req.method == "DELETE" && path.subresource.empty()) return remove(path, req);
  return status_response(method_not_allowed_status());
}

http::Response ObjectHandlers::get(const ResourcePath& path, const http::Request& req) {
  auto obj = store_.get(*path.type, ObjectKey{path.ns, path.name});
  if (!obj) return status_response(obj.error());
  return object_response(200, *path.type, **obj, req);
}

http::Response ObjectHandlers::list(const ResourcePath& path, const http::Request& req) {
  const ResourceType& t = *path.type;
  Representation rep = negotiate(req.header("accept"), true);
  if (rep == Representation::kNone) return status_response(not_acceptable_status());
  auto sel = parse_selector(t, req);
  if (!sel) return status_response(sel.error());
  size_t limit = 0;
  std::string limit_text = req.query_value("limit");
  if (is_decimal(limit_text) && limit_text.size() < 10) limit = std::stoul(limit_text);
  std::optional<uint64_t> at_rv;
  std::optional<ObjectKey> after;
  std::string token = req.query_value("continue");
  if (!token.empty()) {
    if (!req.query_value("resourceVersion").empty() && req.query_value("resourceVersion") != "0")
      return status_response(
          bad_request_status("specifying resource version is not allowed when using continue"));
    auto point = tokens_.redeem(t, token);
    if (!point) return status_response(point.error());
    at_rv = point->rv;
    after = point->after;
  }
  if (token.empty()) {
    // resourceVersion on a list (no resourceVersionMatch), as the real
    // server with its watch cache: "0" is any version, from the cache,
    // and the cache ignores limit (without the cache: paged from etcd); "N" without limit is the cache at N
    // or newer; "N" with limit is read from etcd at exactly N (410 once compacted); "" is the latest, paged.
    // N beyond the latest: 504.
    std::string rv_text = req.query_value("resourceVersion");
    if (rv_text == "0") {
      if (watch_cache_) limit = 0;
    } else if (!rv_text.empty()) {
      if (!is_decimal(rv_text) || rv_text.size() > 19)
        return status_response(bad_request_status("invalid resource version: " + rv_text));
      uint64_t want = std::stoull(rv_text);
      if (want > store_.current_rv())
        return status_response(too_large_resource_version_status(want, store_.current_rv()));
      if (limit > 0) {
        if (want < store_.compacted_rv())
          return status_response(expired_status("The resourceVersion for the provided list is too old."));
        at_rv = want;
      }
    }
  }
  auto page = store_.list(t, path.ns, *sel, limit, at_rv, after);
  if (!page) return status_response(page.error());
  std::string next = page->last ? tokens_.issue(t, page->rv, *page->last) : "";
  if (rep == Representation::kTable) {
    std::vector<Json> objs;
    for (const auto& o : page->items) objs.push_back(*o);
    return json_response(
        200, table_for(t, objs, std::to_string(page->rv), next, req.query_value("includeObject")));
  }
  Json meta = {{"resourceVersion", std::to_string(page->rv)}};
  if (!next.empty()) meta["continue"] = next;
  if (page->remaining) meta["remainingItemCount"] = *page->remaining;
  Json items = Json::array();
  for (const auto& o : page->items) {
    // List items carry no kind or apiVersion.
    Json item = Json::object();
    for (const auto& [k, v] : o->items())
      if (k != "kind" && k != "apiVersion") item[k] = v;
    items.push_back(std::move(item));
  }
  return json_response(200, {{"kind", t.list_kind()},
                             {"apiVersion", t.api_version()},
                             {"metadata", meta},
                             {"items", std::move(items)}});
}

http::Response ObjectHandlers::create(const ResourcePath& path, const http::Request& req) {
  const ResourceType& t = *path.type;
  auto body = parse_body(req);
  if (!body) return status_response(body.error());
  if (auto bad = check_type(t, *body)) return status_response(*bad);
  if (auto bad = check_namespace(t, path, *body)) return status_response(*bad);
  Json obj = normalized(t, *body);
  Json& meta = obj["metadata"];
  if (string_at(meta, "name").empty() && !string_at(meta, "generateName").empty())
    meta["name"] = generate_name(string_at(meta, "generateName"));
  if (meta.contains("name") && !meta["name"].is_string())
    return status_response(bad_request_status("metadata.name must be a string"));
  std::string name = string_at(meta, "name");
  if (auto bad = validate_name(t, name)) return status_response(*bad);
  // As etcd3's store: a numeric version on a new object is refused, anything
  // else there is replaced.
  std::string rv = meta_string(obj, "resourceVersion");
  if (is_decimal(rv) && rv.find_first_not_of('0') != std::string::npos)
    return status_response(
        internal_error_status("resourceVersion should not be set on objects to be created"));
  for (const char* f : {"resourceVersion", "uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "selfLink"})
    meta.erase(f);
  prepare_for_create(t, obj);
  auto stored = store_.create(t, std::move(obj));
  if (!stored) return status_response(stored.error());
  return object_response(201, t, **stored, req);
}

http::Response ObjectHandlers::replace(const ResourcePath& path, const http::Request& req) {
  const ResourceType& t = *path.type;
  auto body = parse_body(req);
  if (!body) return status_response(body.error());
  if (auto bad = check_type(t, *body)) return status_response(*bad);
  if (auto bad = check_namespace(t, path, *body)) return status_response(*bad);
  std::string name = meta_string(*body, "name");
  if (name.empty()) (*body)["metadata"]["name"] = name = path.name;
  if (name != path.name)
    return status_response(bad_request_status("the name of the object (" + name +
                                              ") does not match the name on the URL (" + path.name + ")"));
  std::string rv = meta_string(*body, "resourceVersion");
  if (!rv.empty() && !is_decimal(rv))
    return status_response(bad_request_status("metadata.resourceVersion: Invalid value: \"" + rv +
                                              "\": must be a decimal number"));
  Json next = normalized(t, *body);
  bool status = path.subresource == "status";
  auto stored = store_.update(t, ObjectKey{path.ns, path.name}, [&](const Json& cur) -> ApiResult<Json> {
    if (!rv.empty() && rv != meta_string(cur, "resourceVersion")) return rv_conflict(t, path.name);
    return prepare_for_update(t, cur, next, status);
  });
  if (!stored) return status_response(stored.error());
  return object_response(200, t, **stored, req);
}

http::Response ObjectHandlers::patch(const ResourcePath& path, const http::Request& req) {
  const ResourceType& t = *path.type;
  std::string ct = media_type(req.header("content-type"));
  bool merge = ct == "application/merge-patch+json";
  if (!merge && ct != "application/json-patch+json")
    return status_response(unsupported_media_type_status(ct));
  Json patch = Json::parse(req.body, nullptr, false);
  if (patch.is_discarded() || (merge ? !patch.is_object() : !patch.is_array()))
    return status_response(bad_request_status("the patch could not be decoded"));
  bool status = path.subresource == "status";
  auto stored = store_.update(t, ObjectKey{path.ns, path.name}, [&](const Json& cur) -> ApiResult<Json> {
    Json next = cur;
    if (merge) {
      next.merge_patch(patch);
    } else {
      try {
        next = cur.patch(patch);
      } catch (const Json::exception& e) {
        // nlohmann reports a failed JSON patch by throwing; it ends here.
        return ApiStatus{422, "Invalid", std::string("the JSON patch could not be applied: ") + e.what(),
                         Json(), 0};
      }
    }
    if (!next.is_object()) return bad_request_status("the patched object is not an object");
    if (auto bad = check_type(t, next)) return *bad;
    std::string rv = meta_string(next, "resourceVersion");
    if (!rv.empty() && rv != meta_string(cur, "resourceVersion")) return rv_conflict(t, path.name);
    return prepare_for_update(t, cur, normalized(t, next), status);
  });
  if (!stored) return status_response(stored.error());
  return object_response(200, t, **stored, req);
}

http::Response ObjectHandlers::remove(const ResourcePath& path, const http::Request& req) {
  const ResourceType& t = *path.type;
  auto opts = parse_delete_options(req);
  if (!opts) return status_response(opts.error());
  DeleteDecision graceful;
  if (t.name == "pods") {
    auto grace = opts->grace_period_seconds;
    auto now = std::chrono::system_clock::now();
    graceful = [grace, now](const Json& pod) { return pod_graceful_delete(pod, grace, now); };
  }
  auto gone = store_.remove(t, ObjectKey{path.ns, path.name}, opts->preconditions, graceful);
  if (!gone) return status_response(gone.error());
  return object_response(200, t, **gone, req);
}

}  // namespace kpx::apiserver
