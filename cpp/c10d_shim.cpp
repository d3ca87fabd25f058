// genflow's shim over c10d: the TCPStore, the Gloo process group and the collectives (the C API is
// documented in c10d_shim.h). The NCCL group's constructor lives in c10d_nccl.cpp, compiled only
// when the CUDA headers it needs are found (GENFLOW_WITH_NCCL).

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "c10d_internal.hpp"

using genflow_c10d::guarded;
using genflow_c10d::InvalidArgument;

namespace genflow_c10d {

int report(const std::exception_ptr& e, int comm_code, char** err) noexcept {
  int code = comm_code;
  try {
    std::string msg;
    try {
      std::rethrow_exception(e);
    } catch (const InvalidArgument& x) {
      code = GF_EINVAL;
      msg = x.what();
    } catch (const c10::Error& x) {
      msg = x.what_without_backtrace();
    } catch (const std::exception& x) {
      msg = x.what();
    } catch (...) {
      msg = "unknown C++ exception";
    }
    // One line: c10d messages sometimes span several.
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    while (!msg.empty() && msg.back() == ' ') {
      msg.pop_back();
    }
    if (err != nullptr) {
      *err = strdup(msg.empty() ? "unknown C++ error" : msg.c_str());
    }
  } catch (...) {
    if (err != nullptr) {
      *err = nullptr;
    }
  }
  return code;
}

} // namespace genflow_c10d

namespace {

using namespace std::chrono;

// Waits a little longer than the backend's own timeout, so that its more specific error (which
// names the operation and peer address) normally comes first; this wait only guards against work
// that never finishes.
milliseconds wait_limit(milliseconds timeout) {
  return timeout + timeout / 4 + milliseconds(1000);
}

void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works, milliseconds timeout) {
  for (auto& w : works) {
    w->wait(wait_limit(timeout));
  }
}

bool gloo_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
    case at::kBFloat16:
    case at::kFloat:
    case at::kDouble:
    case at::kChar:
    case at::kByte:
    case at::kInt:
    case at::kLong:
      return true;
    default:
      return false;
  }
}

// Tensors of one dtype and device, reduced or broadcast as one flat buffer.
struct Bucket {
  std::vector<at::Tensor> members;
  size_t bytes = 0;
  at::Tensor buffer;
  bool in_place = false;
};

at::Tensor checked(const gf_group* g, gf_tensor* const* tensors, size_t i) {
  if (tensors[i] == nullptr || !tensors[i]->defined()) {
    throw InvalidArgument("tensor " + std::to_string(i) + " is undefined");
  }
  const at::Tensor& t = *tensors[i];
  if (t.layout() != at::kStrided) {
    throw InvalidArgument("tensor " + std::to_string(i) + " is not dense (layout " +
                          c10::str(t.layout()) + "); only dense tensors can be reduced");
  }
  if (g->device < 0 && !t.device().is_cpu()) {
    throw InvalidArgument("tensor " + std::to_string(i) + " is on " + t.device().str() +
                          "; the Gloo group takes CPU tensors (use the NCCL backend for CUDA)");
  }
  if (g->device >= 0 && !t.device().is_cuda()) {
    throw InvalidArgument("tensor " + std::to_string(i) + " is on " + t.device().str() +
                          "; the NCCL group takes CUDA tensors (use the Gloo backend for CPU)");
  }
  if (g->device < 0 && !gloo_dtype(t.scalar_type())) {
    throw InvalidArgument("tensor " + std::to_string(i) + " has dtype " +
                          std::string(c10::toString(t.scalar_type())) +
                          ", which Gloo cannot reduce; use f16, bf16, f32, f64, i8, u8, i32 or i64");
  }
  return t;
}

// Groups the tensors by (dtype, device) in order of first appearance, splits each group into
// buckets of at most cap bytes (0: no cap), and fills each bucket's flat buffer. A bucket holding
// one contiguous tensor uses it directly.
std::vector<Bucket> make_buckets(const gf_group* g, gf_tensor* const* tensors, size_t n, size_t cap) {
  std::vector<std::pair<std::pair<at::ScalarType, at::Device>, std::vector<Bucket>>> groups;
  for (size_t i = 0; i < n; ++i) {
    at::Tensor t = checked(g, tensors, i);
    auto key = std::make_pair(t.scalar_type(), t.device());
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& p) { return p.first == key; });
    if (it == groups.end()) {
      groups.emplace_back(key, std::vector<Bucket>(1));
      it = groups.end() - 1;
    }
    size_t bytes = t.numel() * t.element_size();
    Bucket* b = &it->second.back();
    if (cap > 0 && !b->members.empty() && b->bytes + bytes > cap) {
      it->second.emplace_back();
      b = &it->second.back();
    }
    b->members.push_back(std::move(t));
    b->bytes += bytes;
  }
  std::vector<Bucket> buckets;
  c10::NoGradGuard no_grad;
  for (auto& [key, list] : groups) {
    for (auto& b : list) {
      if (b.members.size() == 1 && b.members[0].is_contiguous()) {
        b.in_place = true;
        b.buffer = b.members[0];
      } else {
        int64_t total = 0;
        for (const auto& t : b.members) {
          total += t.numel();
        }
        b.buffer = at::empty({total}, b.members[0].options());
        int64_t off = 0;
        for (const auto& t : b.members) {
          b.buffer.narrow(0, off, t.numel()).view(t.sizes()).copy_(t);
          off += t.numel();
        }
      }
      buckets.push_back(std::move(b));
    }
  }
  return buckets;
}

void copy_back(std::vector<Bucket>& buckets) {
  c10::NoGradGuard no_grad;
  for (auto& b : buckets) {
    if (b.in_place) {
      continue;
    }
    int64_t off = 0;
    for (auto& t : b.members) {
      t.copy_(b.buffer.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

gf_group* make_group(c10::intrusive_ptr<c10d::Backend> backend, int rank, int world, milliseconds timeout,
                     int device) {
  auto* g = new gf_group();
  g->backend = std::move(backend);
  g->rank = rank;
  g->world_size = world;
  g->timeout = timeout;
  g->device = device;
  return g;
}

void check_group_args(int rank, int world_size, int64_t timeout_ms) {
  if (world_size < 1) {
    throw InvalidArgument("world size " + std::to_string(world_size) + " is not positive");
  }
  if (rank < 0 || rank >= world_size) {
    throw InvalidArgument("rank " + std::to_string(rank) + " is outside 0.." + std::to_string(world_size - 1));
  }
  if (timeout_ms <= 0) {
    throw InvalidArgument("timeout " + std::to_string(timeout_ms) + " ms is not positive");
  }
}

} // namespace

extern "C" {

void gf_string_free(char* s) {
  free(s);
}

void gf_bytes_free(uint8_t* p) {
  free(p);
}

int gf_store_open(const char* host, uint16_t port, int is_server, int world_size, int64_t timeout_ms,
                  gf_store** out, char** err) {
  return guarded(err, GF_ESTORE, [&] {
    if (host == nullptr || out == nullptr) {
      throw InvalidArgument("null host or output");
    }
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<size_t>(std::max(world_size, 1));
    opts.waitWorkers = false;
    opts.timeout = milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new gf_store{std::move(store)};
  });
}

int gf_store_clone(gf_store* store, gf_store** out, char** err) {
  return guarded(err, GF_ESTORE, [&] {
    if (store == nullptr || out == nullptr) {
      throw InvalidArgument("null store or output");
    }
    *out = new gf_store{store->store->clone()};
  });
}

void gf_store_free(gf_store* store) {
  try {
    delete store;
  } catch (...) {
  }
}

int gf_store_set(gf_store* store, const char* key, const uint8_t* value, size_t len, char** err) {
  return guarded(err, GF_ESTORE, [&] {
    if (store == nullptr || key == nullptr || (value == nullptr && len > 0)) {
      throw InvalidArgument("null store, key or value");
    }
    store->store->set(key, std::vector<uint8_t>(value, value + len));
  });
}

int gf_store_get(gf_store* store, const char* key, uint8_t** value, size_t* len, char** err) {
  return guarded(err, GF_ESTORE, [&] {
    if (store == nullptr || key == nullptr || value == nullptr || len == nullptr) {
      throw InvalidArgument("null store, key or output");
    }
    std::vector<uint8_t> v = store->store->get(key);
    auto* p = static_cast<uint8_t*>(malloc(std::max<size_t>(v.size(), 1)));
    if (p == nullptr) {
      throw std::bad_alloc();
    }
    std::copy(v.begin(), v.end(), p);
    *value = p;
    *len = v.size();
  });
}

int gf_store_check(gf_store* store, const char* key, int* exists, char** err) {
  return guarded(err, GF_ESTORE, [&] {
    if (store == nullptr || key == nullptr || exists == nullptr) {
      throw InvalidArgument("null store, key or output");
    }
    *exists = store->store->check({std::string(key)}) ? 1 : 0;
  });
}

int gf_store_add(gf_store* store, const char* key, int64_t delta, int64_t* result, char** err) {
  return guarded(err, GF_ESTORE, [&] {
    if (store == nullptr || key == nullptr || result == nullptr) {
      throw InvalidArgument("null store, key or output");
    }
    *result = store->store->add(key, delta);
  });
}

int gf_group_new_gloo(gf_store* store, const char* prefix, int rank, int world_size, int64_t timeout_ms,
                      const char* ifnames, gf_group** out, char** err) {
  int rc = guarded(err, GF_EINVAL, [&] {
    if (store == nullptr || prefix == nullptr || out == nullptr) {
      throw InvalidArgument("null store, prefix or output");
    }
    check_group_args(rank, world_size, timeout_ms);
  });
  if (rc != GF_OK) {
    return rc;
  }
  return guarded(err, GF_ECOMM, [&] {
    auto timeout = milliseconds(timeout_ms);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    std::string names = ifnames != nullptr ? ifnames : "";
    size_t start = 0;
    while (start < names.size()) {
      size_t end = names.find(',', start);
      if (end == std::string::npos) {
        end = names.size();
      }
      if (end > start) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(names.substr(start, end - start)));
      }
      start = end + 1;
    }
    if (opts->devices.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->store);
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world_size, opts);
    *out = make_group(pg, rank, world_size, timeout, -1);
  });
}

#ifndef GENFLOW_WITH_NCCL
int gf_has_nccl(void) {
  return 0;
}

int gf_group_new_nccl(gf_store*, const char*, int, int, int64_t, int, gf_group** out, char** err) {
  if (out != nullptr) {
    *out = nullptr;
  }
  if (err != nullptr) {
    *err = strdup(
        "this genflow build has no NCCL backend: it is compiled only when the CUDA headers are found "
        "at build time (pip packages nvidia-cuda-crt and nvidia-cuda-cccl next to the torch wheel); "
        "use the Gloo backend, or install them and rebuild");
  }
  return GF_EUNSUPPORTED;
}
#endif

void gf_group_free(gf_group* group, int abort) {
  if (group == nullptr) {
    return;
  }
  try {
    if (abort != 0) {
      group->backend->abort();
    } else {
      group->backend->shutdown();
    }
  } catch (...) {
  }
  try {
    delete group;
  } catch (...) {
  }
}

int gf_all_reduce(gf_group* group, gf_tensor* const* tensors, size_t n, int op, size_t bucket_bytes,
                  char** err) {
  std::vector<Bucket> buckets;
  int rc = guarded(err, GF_EINVAL, [&] {
    if (group == nullptr || (tensors == nullptr && n > 0)) {
      throw InvalidArgument("null group or tensor list");
    }
    if (op != GF_REDUCE_SUM && op != GF_REDUCE_AVG) {
      throw InvalidArgument("unknown reduce operation " + std::to_string(op));
    }
    for (size_t i = 0; i < n; ++i) {
      at::Tensor t = checked(group, tensors, i);
      if (op == GF_REDUCE_AVG && !at::isFloatingType(t.scalar_type())) {
        throw InvalidArgument("tensor " + std::to_string(i) + " has dtype " +
                              std::string(c10::toString(t.scalar_type())) +
                              "; the average needs floating-point tensors (use the sum)");
      }
    }
    buckets = make_buckets(group, tensors, n, bucket_bytes);
  });
  if (rc != GF_OK) {
    return rc;
  }
  rc = guarded(err, GF_ECOMM, [&] {
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = group->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& b : buckets) {
      std::vector<at::Tensor> one{b.buffer};
      works.push_back(group->backend->allreduce(one, opts));
    }
    wait_all(works, group->timeout);
  });
  if (rc != GF_OK) {
    return rc;
  }
  return guarded(err, GF_EINVAL, [&] {
    if (op == GF_REDUCE_AVG) {
      c10::NoGradGuard no_grad;
      for (auto& b : buckets) {
        b.buffer.div_(group->world_size);
      }
    }
    copy_back(buckets);
  });
}

int gf_broadcast(gf_group* group, gf_tensor* const* tensors, size_t n, int root, char** err) {
  std::vector<Bucket> buckets;
  int rc = guarded(err, GF_EINVAL, [&] {
    if (group == nullptr || (tensors == nullptr && n > 0)) {
      throw InvalidArgument("null group or tensor list");
    }
    if (root < 0 || root >= group->world_size) {
      throw InvalidArgument("root rank " + std::to_string(root) + " is outside 0.." +
                            std::to_string(group->world_size - 1));
    }
    buckets = make_buckets(group, tensors, n, 0);
  });
  if (rc != GF_OK) {
    return rc;
  }
  rc = guarded(err, GF_ECOMM, [&] {
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    opts.timeout = group->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& b : buckets) {
      std::vector<at::Tensor> one{b.buffer};
      works.push_back(group->backend->broadcast(one, opts));
    }
    wait_all(works, group->timeout);
  });
  if (rc != GF_OK || group->rank == root) {
    return rc;
  }
  return guarded(err, GF_EINVAL, [&] { copy_back(buckets); });
}

int gf_all_gather(gf_group* group, const gf_tensor* input, gf_tensor** out, char** err) {
  std::vector<std::vector<at::Tensor>> outputs(1);
  std::vector<at::Tensor> inputs;
  int rc = guarded(err, GF_EINVAL, [&] {
    if (group == nullptr || out == nullptr) {
      throw InvalidArgument("null group or output");
    }
    gf_tensor* one[1] = {const_cast<gf_tensor*>(input)};
    at::Tensor t = checked(group, one, 0).contiguous();
    for (int i = 0; i < group->world_size; ++i) {
      outputs[0].push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
    }
    inputs.push_back(std::move(t));
  });
  if (rc != GF_OK) {
    return rc;
  }
  rc = guarded(err, GF_ECOMM, [&] {
    c10d::AllgatherOptions opts;
    opts.timeout = group->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works{group->backend->allgather(outputs, inputs, opts)};
    wait_all(works, group->timeout);
  });
  if (rc != GF_OK) {
    return rc;
  }
  return guarded(err, GF_EINVAL, [&] {
    std::vector<at::Tensor*> made;
    try {
      for (auto& t : outputs[0]) {
        made.push_back(new at::Tensor(std::move(t)));
      }
    } catch (...) {
      for (auto* p : made) {
        delete p;
      }
      throw;
    }
    std::copy(made.begin(), made.end(), out);
  });
}

int gf_barrier(gf_group* group, char** err) {
  if (group == nullptr) {
    return guarded(err, GF_EINVAL, [] { throw InvalidArgument("null group"); });
  }
  return guarded(err, GF_ECOMM, [&] {
    c10d::BarrierOptions opts;
    opts.timeout = group->timeout;
    if (group->device >= 0) {
      opts.device_ids = {group->device};
    }
    std::vector<c10::intrusive_ptr<c10d::Work>> works{group->backend->barrier(opts)};
    wait_all(works, group->timeout);
  });
}

int gf_set_grad(gf_tensor* var, const gf_tensor* grad, char** err) {
  return guarded(err, GF_EINVAL, [&] {
    if (var == nullptr || grad == nullptr || !var->defined() || !grad->defined()) {
      throw InvalidArgument("undefined variable or gradient");
    }
    if (var->sizes() != grad->sizes() || var->scalar_type() != grad->scalar_type() ||
        var->device() != grad->device()) {
      throw InvalidArgument("the gradient's shape, dtype or device differs from its variable's");
    }
    var->mutable_grad() = *grad;
  });
}

} // extern "C"
