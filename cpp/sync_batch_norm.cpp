// Batch normalisation over the ranks of a group (gf_sync_batch_norm, documented in c10d_shim.h):
// the statistics of the global batch in the forward pass, and a backward pass that all-reduces
// the two per-channel sums the input gradient needs, as PyTorch's SyncBatchNorm does.

#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "c10d_internal.hpp"

using genflow_c10d::guarded;
using genflow_c10d::InvalidArgument;
using genflow_c10d::wait_limit;

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Sums the f64 tensor `t` in place over the ranks, waiting at most the group's timeout.
void sum_over_ranks(const c10::intrusive_ptr<c10d::Backend>& backend, at::Tensor& t,
                    std::chrono::milliseconds timeout) {
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  opts.timeout = timeout;
  std::vector<at::Tensor> one{t};
  backend->allreduce(one, opts)->wait(wait_limit(timeout));
}

// The dimensions every channel's statistics run over: all but dimension 1.
std::vector<int64_t> reduced_dims(const at::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) {
    dims.push_back(d);
  }
  return dims;
}

// The shape [1, C, 1, ...] that broadcasts a per-channel vector against x.
std::vector<int64_t> channel_shape(const at::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = x.size(1);
  return shape;
}

// y = (x - mean) * invstd * weight + bias with the global statistics `mean` and `invstd` (which
// the caller computed without a graph); the backward pass reduces over the ranks.
struct SyncBatchNormFn : public torch::autograd::Function<SyncBatchNormFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& invstd,
                            double count, c10::intrusive_ptr<c10d::Backend> backend, int64_t timeout_ms) {
    auto shape = channel_shape(input);
    auto scale = weight.defined() ? invstd * weight : invstd;
    auto y = (input - mean.view(shape)) * scale.view(shape);
    if (bias.defined()) {
      y = y + bias.view(shape);
    }
    ctx->save_for_backward({input, weight, mean, invstd});
    ctx->saved_data["count"] = count;
    ctx->saved_data["timeout_ms"] = timeout_ms;
    ctx->saved_data["backend"] = c10::IValue::make_capsule(backend);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& mean = saved[2];
    const at::Tensor& invstd = saved[3];
    const at::Tensor& dy = grads[0];
    auto shape = channel_shape(input);
    auto dims = reduced_dims(input);
    auto xmu = input - mean.view(shape);
    auto sum_dy = dy.sum(dims);
    auto sum_dy_xmu = (dy * xmu).sum(dims);
    at::Tensor grad_input, grad_weight, grad_bias;
    if (ctx->needs_input_grad(1)) {
      grad_weight = sum_dy_xmu * invstd;
    }
    if (ctx->needs_input_grad(2)) {
      grad_bias = sum_dy;
    }
    if (ctx->needs_input_grad(0)) {
      auto backend = c10::static_intrusive_pointer_cast<c10d::Backend>(ctx->saved_data["backend"].toCapsule());
      auto timeout = std::chrono::milliseconds(ctx->saved_data["timeout_ms"].toInt());
      double count = ctx->saved_data["count"].toDouble();
      int64_t c = input.size(1);
      auto sums = at::cat({sum_dy, sum_dy_xmu}).to(at::kDouble).contiguous();
      sum_over_ranks(backend, sums, timeout);
      sums = sums.to(input.scalar_type()) / count;
      auto mean_dy = sums.narrow(0, 0, c);
      auto mean_dy_xmu = sums.narrow(0, c, c);
      auto scale = weight.defined() ? invstd * weight : invstd;
      grad_input = (dy - mean_dy.view(shape) - xmu * (invstd * invstd * mean_dy_xmu).view(shape)) *
                   scale.view(shape);
    }
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor(),
            at::Tensor(),  at::Tensor(),  at::Tensor()};
  }
};

const at::Tensor* optional(const gf_tensor* t) {
  return (t != nullptr && t->defined()) ? t : nullptr;
}

void check_channels(const char* what, const at::Tensor* t, const at::Tensor& input) {
  if (t != nullptr && (t->dim() != 1 || t->size(0) != input.size(1) || t->device() != input.device())) {
    throw InvalidArgument(std::string(what) + " must be a vector of the input's " + std::to_string(input.size(1)) +
                          " channels on its device, got shape " + c10::str(t->sizes()) + " on " +
                          t->device().str());
  }
}

} // namespace

extern "C" {

int gf_sync_batch_norm(gf_group* group, const gf_tensor* input, const gf_tensor* weight,
                       const gf_tensor* bias, gf_tensor* running_mean, gf_tensor* running_var,
                       double momentum, double eps, gf_tensor** out, char** err) {
  const at::Tensor *w = nullptr, *b = nullptr, *rm = nullptr, *rv = nullptr;
  int rc = guarded(err, GF_EINVAL, [&] {
    if (group == nullptr || input == nullptr || !input->defined() || out == nullptr) {
      throw InvalidArgument("null group, input or output");
    }
    if (input->dim() < 2 || !at::isFloatingType(input->scalar_type())) {
      throw InvalidArgument("batch normalisation needs a floating-point input [N, C, ...], got " +
                            std::string(c10::toString(input->scalar_type())) + " of shape " +
                            c10::str(input->sizes()));
    }
    if ((group->device < 0) != input->device().is_cpu()) {
      throw InvalidArgument("the input is on " + input->device().str() + ", which this group's backend does not serve");
    }
    w = optional(weight);
    b = optional(bias);
    rm = optional(running_mean);
    rv = optional(running_var);
    check_channels("weight", w, *input);
    check_channels("bias", b, *input);
    check_channels("running_mean", rm, *input);
    check_channels("running_var", rv, *input);
    if (!(eps > 0.0)) {
      throw InvalidArgument("eps must be positive, got " + std::to_string(eps));
    }
  });
  if (rc != GF_OK) {
    return rc;
  }
  at::Tensor mean, invstd;
  double count = 0.0;
  rc = guarded(err, GF_ECOMM, [&] {
    c10::NoGradGuard no_grad;
    const at::Tensor x = input->detach();
    auto dims = reduced_dims(x);
    int64_t c = x.size(1);
    auto stats = at::cat({x.sum(dims, false, at::kDouble),
                          at::full({1}, static_cast<double>(x.numel() / c), x.options().dtype(at::kDouble))});
    sum_over_ranks(group->backend, stats, group->timeout);
    count = stats[c].item<double>();
    if (count < 1.0) {
      throw InvalidArgument("the global batch is empty");
    }
    auto mean64 = stats.narrow(0, 0, c) / count;
    auto sq = (x.to(at::kDouble) - mean64.view(channel_shape(x))).square().sum(dims).contiguous();
    sum_over_ranks(group->backend, sq, group->timeout);
    auto var64 = sq / count;
    mean = mean64.to(x.scalar_type());
    invstd = (var64 + eps).rsqrt().to(x.scalar_type());
    if (rm != nullptr) {
      rm->mul_(1.0 - momentum).add_(mean64.to(rm->scalar_type()), momentum);
    }
    if (rv != nullptr) {
      auto unbiased = count > 1.0 ? var64 * (count / (count - 1.0)) : var64;
      rv->mul_(1.0 - momentum).add_(unbiased.to(rv->scalar_type()), momentum);
    }
  });
  if (rc != GF_OK) {
    return rc;
  }
  return guarded(err, GF_EINVAL, [&] {
    at::Tensor y = SyncBatchNormFn::apply(*input, w != nullptr ? *w : at::Tensor(), b != nullptr ? *b : at::Tensor(),
                                          mean, invstd, count, group->backend,
                                          static_cast<int64_t>(group->timeout.count()));
    *out = new at::Tensor(std::move(y));
  });
}

} // extern "C"
