// The NCCL process group (CUDA tensors). Compiled by build.rs only when the CUDA runtime, crt, CCCL
// and NCCL headers are found (see build.rs); then c10d_shim.cpp is compiled with
// GENFLOW_WITH_NCCL and leaves these two functions to this file.

#include <string>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "c10d_internal.hpp"

using genflow_c10d::guarded;
using genflow_c10d::InvalidArgument;

extern "C" {

int gf_has_nccl(void) {
  return 1;
}

int gf_group_new_nccl(gf_store* store, const char* prefix, int rank, int world_size, int64_t timeout_ms,
                      int device, gf_group** out, char** err) {
  int rc = guarded(err, GF_EINVAL, [&] {
    if (store == nullptr || prefix == nullptr || out == nullptr) {
      throw InvalidArgument("null store, prefix or output");
    }
    if (world_size < 1 || rank < 0 || rank >= world_size || timeout_ms <= 0) {
      throw InvalidArgument("rank " + std::to_string(rank) + ", world size " + std::to_string(world_size) +
                            " or timeout " + std::to_string(timeout_ms) + " ms is out of range");
    }
    if (device < 0) {
      throw InvalidArgument("CUDA device index " + std::to_string(device) + " is negative");
    }
  });
  if (rc != GF_OK) {
    return rc;
  }
  return guarded(err, GF_ECOMM, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->store);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, world_size, opts);
    // Binds the group to this rank's device, so that its communicator is created there at once
    // and barriers run there.
    pg->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
    auto* g = new gf_group();
    g->backend = pg;
    g->rank = rank;
    g->world_size = world_size;
    g->timeout = timeout;
    g->device = device;
    *out = g;
  });
}

} // extern "C"
