// The lab's EndpointSlice controller, run in-process beside the API server's
// store: it follows Services, Pods and EndpointSlices and keeps, for every
// Service with a selector, the EndpointSlices the real controller would
// (endpointslices.h), writing only what changed.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "apiserver/store.h"
#include "status/status.h"

namespace kpx::lab {

struct EndpointSliceControllerOptions {
  size_t max_endpoints_per_slice = 100;  // the real controller's default
};

class EndpointSliceController {
 public:
  // Running (its first full pass may still be under way) when this returns.
  static Result<std::unique_ptr<EndpointSliceController>> start(apiserver::Store& store,
                                                                 EndpointSliceControllerOptions o = {});
  ~EndpointSliceController();
  EndpointSliceController(const EndpointSliceController&) = delete;
  EndpointSliceController& operator=(const EndpointSliceController&) = delete;

  // Ends the thread. Idempotent; the destructor calls it.
  void stop();
  // Slices created, updated and deleted so far (for tests and status).
  uint64_t writes() const { return writes_; }

 private:
  EndpointSliceController(apiserver::Store& store, EndpointSliceControllerOptions o);
  struct Loop;
  apiserver::Store& store_;
  EndpointSliceControllerOptions opts_;
  std::atomic<bool> stopping_ = false;
  std::atomic<uint64_t> writes_ = 0;
  std::thread thread_;
};

}  // namespace kpx::lab
