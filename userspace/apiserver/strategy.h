// What the real server's registry strategies and defaulting do to an object
// on its way in: status handling per type, the defaults a client sees filled
// in, name validation. Other fields are stored as sent, unvalidated, so that
// tests can feed clients objects a real server would refuse.
#pragma once

#include <optional>
#include <string>

#include "apiserver/api_status.h"
#include "apiserver/resources.h"

namespace kpx::apiserver {

// Create: a Service's status is reset to {"loadBalancer":{}}, a Pod's to
// phase Pending, a Namespace's to phase Active; a Node keeps what it is sent.
void prepare_for_create(const ResourceType& t, Json& obj);

// Update: of the object, status stays as it is; of the /status subresource,
// only status is taken from `next`.
Json prepare_for_update(const ResourceType& t, const Json& current, Json next, bool status_subresource);

// A name for metadata.generateName `base`: base (cut to 58 characters) and 5
// random characters, as the real server's name generator.
std::string generate_name(const std::string& base);

// metadata.name rules (DNS-1035 label for Services, DNS-1123 label for
// Namespaces, DNS-1123 subdomain otherwise): 422 Invalid when broken.
std::optional<ApiStatus> validate_name(const ResourceType& t, const std::string& name);

}  // namespace kpx::apiserver
