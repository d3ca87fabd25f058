// genflow's C API over PyTorch's c10d (TCPStore, ProcessGroupGloo, ProcessGroupNCCL).
//
// Every function catches every C++ exception: nothing unwinds into the caller. A function returns
// GF_OK (0) on success; otherwise one of the GF_E* codes, and when `err` is not null, *err receives
// a malloc'd one-line message for the caller to release with gf_string_free.
//
// Tensors cross as `at::Tensor*` (what tch's `Tensor::as_ptr` gives), so nothing is copied at the
// boundary. Tensors returned to the caller are `new at::Tensor`, owned by the caller (tch's
// `Tensor::from_ptr` takes them over).
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
namespace at {
class Tensor;
}
typedef at::Tensor gf_tensor;
extern "C" {
#else
typedef struct gf_tensor gf_tensor;
#endif

enum {
  GF_OK = 0,
  // A caller error: bad argument, dtype, device or shape. The group is still usable.
  GF_EINVAL = 1,
  // The collective failed (a peer died, hung past the timeout, or the transport broke).
  GF_ECOMM = 2,
  // The rendezvous store failed (unreachable, timed out).
  GF_ESTORE = 3,
  // The NCCL backend is not compiled into this build.
  GF_EUNSUPPORTED = 4,
};

enum { GF_REDUCE_SUM = 0, GF_REDUCE_AVG = 1 };

typedef struct gf_store gf_store;
typedef struct gf_group gf_group;

void gf_string_free(char* s);
void gf_bytes_free(uint8_t* p);

// 1 when this build holds the NCCL backend (its CUDA headers were found at build time), else 0.
int gf_has_nccl(void);

// TCPStore: the server (is_server != 0, in the process of rank 0 unless an agent hosts it) also
// holds a client. `world_size` is the number of clients the server expects (not waited for).
int gf_store_open(const char* host, uint16_t port, int is_server, int world_size, int64_t timeout_ms,
                  gf_store** out, char** err);
// A second client connection to the same store (for a thread of its own).
int gf_store_clone(gf_store* store, gf_store** out, char** err);
void gf_store_free(gf_store* store);
int gf_store_set(gf_store* store, const char* key, const uint8_t* value, size_t len, char** err);
// Blocks until the key exists or the store's timeout passes; *value is malloc'd (gf_bytes_free).
int gf_store_get(gf_store* store, const char* key, uint8_t** value, size_t* len, char** err);
// *exists = 1 when the key is set (never blocks).
int gf_store_check(gf_store* store, const char* key, int* exists, char** err);
int gf_store_add(gf_store* store, const char* key, int64_t delta, int64_t* result, char** err);

// A Gloo process group over the store; its keys live under `prefix` (a different one for each
// group or launch attempt sharing the store). `ifnames`: comma-separated network interfaces
// (GLOO_SOCKET_IFNAME); null or empty: the default device (this host's name, else loopback).
int gf_group_new_gloo(gf_store* store, const char* prefix, int rank, int world_size, int64_t timeout_ms,
                      const char* ifnames, gf_group** out, char** err);
// An NCCL process group (GF_EUNSUPPORTED when not compiled), keys under `prefix`; `device` is the
// CUDA device index this rank uses (its barrier runs there).
int gf_group_new_nccl(gf_store* store, const char* prefix, int rank, int world_size, int64_t timeout_ms,
                      int device, gf_group** out, char** err);
// Shuts the group down (aborting outstanding work first when `abort` != 0) and frees it.
void gf_group_free(gf_group* group, int abort);

// In-place all-reduce of n tensors. Tensors are flattened into one buffer per (dtype, device),
// split further so no buffer exceeds bucket_bytes (0: no cap; a larger tensor gets its own
// buffer); all buffers' collectives are started, then waited for, then copied back. A single
// contiguous tensor is reduced in place, without a copy. GF_REDUCE_AVG needs floating-point
// tensors (sum, then division by the world size).
int gf_all_reduce(gf_group* group, gf_tensor* const* tensors, size_t n, int op, size_t bucket_bytes,
                  char** err);
// In-place broadcast of n tensors from `root`, coalesced like gf_all_reduce (no cap).
int gf_broadcast(gf_group* group, gf_tensor* const* tensors, size_t n, int root, char** err);
// Gathers `input` (same shape and dtype on every rank) from every rank: out[i] (world_size
// entries) receives a new tensor owned by the caller; nothing is written on failure.
int gf_all_gather(gf_group* group, const gf_tensor* input, gf_tensor** out, char** err);
int gf_barrier(gf_group* group, char** err);

// Sets `var`'s gradient to `grad` (the same storage, no copy); tch has no setter of its own.
int gf_set_grad(gf_tensor* var, const gf_tensor* grad, char** err);

#ifdef __cplusplus
} // extern "C"
#endif
