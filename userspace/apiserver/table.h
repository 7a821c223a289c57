// meta.k8s.io/v1 Table renderings of objects, what `kubectl get` asks for
// (Accept: application/json;as=Table;v=v1;g=meta.k8s.io) and prints as its
// columns. Columns follow the real server's printers for each type.
#pragma once

#include <string>
#include <vector>

#include "apiserver/api_status.h"
#include "apiserver/resources.h"

namespace kpx::apiserver {

// rv and next_continue go into the Table's list metadata ("" leaves them out).
// include_object (the includeObject query parameter): "Object" puts the whole
// object in each row, "None" nothing, anything else its metadata as
// PartialObjectMetadata (the default, which kubectl needs for -A's NAMESPACE).
Json table_for(const ResourceType& t, const std::vector<Json>& objects, const std::string& rv,
               const std::string& next_continue, const std::string& include_object);

// "5s", "3m20s", "4h", "12d": the real server's age format.
std::string human_duration(long seconds);

}  // namespace kpx::apiserver
