// Minimal declarations of the Gloo types that c10d's ProcessGroupGloo.hpp names.
//
// The torch wheel contains Gloo's code (inside libtorch_cpu) but not its headers. The shim only
// holds these types behind shared_ptr/unique_ptr and never creates, copies or calls them itself, so
// their layout does not matter: only their names (and the members that ProcessGroupGloo.hpp's
// inline functions mention) must exist for the header to compile. The real definitions live in
// libtorch_cpu, which constructs and uses every one of these objects.
//
// Files gloo/{algorithm,context}.h, gloo/common/error.h, gloo/rendezvous/store.h and
// gloo/transport/device.h (the paths ProcessGroupGloo.hpp includes) each include this header.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {

class Context {
 public:
  // Named by ProcessGroupGloo::setTimeout (an inline virtual the shim never calls).
  void setTimeout(std::chrono::milliseconds timeout);
};

namespace rendezvous {

// Base class of ProcessGroupGloo::GlooStore: the virtual functions it overrides.
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) = 0;
};

} // namespace rendezvous

namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport

} // namespace gloo
