// Content negotiation and response bodies: which representation a client's
// Accept header allows (plain JSON or a meta.k8s.io/v1 Table), whether a
// request body's Content-Type is one the server reads, and the HTTP
// responses for objects and Status errors.
#pragma once

#include <string>

#include "apiserver/api_status.h"
#include "apiserver/http.h"

namespace kpx::apiserver {

enum class Representation { kJson, kTable, kNone };

// The first entry of an Accept header the server can produce (order wins,
// q-values are ignored). Tables only where table_ok (object and list reads).
Representation negotiate(const std::string& accept, bool table_ok);

// The media type of a Content-Type header, without parameters, lower case.
std::string media_type(const std::string& content_type);

http::Response json_response(int code, const Json& body);
http::Response status_response(const ApiStatus& s);

}  // namespace kpx::apiserver
