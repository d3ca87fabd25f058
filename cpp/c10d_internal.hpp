// What the shim's translation units (Gloo, and NCCL when compiled) share: the handle types and the
// exception guard. Not part of the C API.
#pragma once

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "c10d_shim.h"

struct gf_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct gf_group {
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank = 0;
  int world_size = 1;
  std::chrono::milliseconds timeout{0};
  // NCCL: the CUDA device this rank's barrier runs on; -1 for Gloo.
  int device = -1;
};

namespace genflow_c10d {

// An error in the caller's arguments (GF_EINVAL).
struct InvalidArgument : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Turns the exception `e` into a status code (GF_EINVAL for InvalidArgument, else `comm_code`) and,
// when err is not null, a malloc'd one-line message without C++ backtraces.
int report(const std::exception_ptr& e, int comm_code, char** err) noexcept;

// Runs f; every exception becomes a status code and *err (see report).
template <class F>
int guarded(char** err, int comm_code, F&& f) noexcept {
  try {
    f();
    return GF_OK;
  } catch (...) {
    return report(std::current_exception(), comm_code, err);
  }
}

} // namespace genflow_c10d
