// Internal to keel: libcurl transfers on a runtime's control thread. keel's fetchers and
// lease stores use this; users do not.
//
// A transfer is a libcurl easy handle that the caller has configured (URL, callbacks,
// timeouts). `AddTransfer` hands it to the runtime's multi handle; the control thread's loop
// drives it without blocking, and calls `done` on the control thread when it ends. libcurl's
// types stay out of this header: the handle is passed as `void*` (libcurl's `CURL*`) and the
// result as an int (libcurl's `CURLcode`).
//
// Lifetime: the caller owns the easy handle and keeps it (and whatever its callbacks use)
// alive until `done` has run; `done` runs exactly once, then the handle is no longer in the
// multi handle and the caller may clean it up. At Shutdown, transfers still running are
// removed and `done` runs with `cancelled` set.
//
// Thread safety: control thread only, for all three functions.
#ifndef KEEL_INTERNAL_TRANSFERS_H_
#define KEEL_INTERNAL_TRANSFERS_H_

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "keel/runtime.h"

namespace keel::internal {

struct TransferResult {
  int curl_code = 0;       // libcurl's CURLcode; 0 (CURLE_OK) when the transfer completed
  bool cancelled = false;  // removed unfinished: RemoveTransfer or the runtime's Shutdown
};

// Starts `easy` on the runtime's multi handle. FailedPrecondition off the control thread or
// while the runtime shuts down; Internal when libcurl refuses the handle. On an error
// `done` is not called.
absl::Status AddTransfer(Runtime& runtime, void* easy,
                         absl::AnyInvocable<void(TransferResult)> done);

// Stops a running transfer: `done` runs now with `cancelled` set. False when `easy` is not
// running on this runtime (already done, or never added).
bool RemoveTransfer(Runtime& runtime, void* easy);

// How many transfers are running on the runtime.
size_t RunningTransfers(Runtime& runtime);

}  // namespace keel::internal

#endif  // KEEL_INTERNAL_TRANSFERS_H_
