// GatherColumns: the same few columns of every row (the target tokens' logits), less a per-row
// shift (the row's log-sum-exp, making them log-probs), in f32. A column outside the row writes 0
// and raises a device error bit instead of reading out of bounds.
#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    GatherColumnsKernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                        const int32_t* __restrict__ columns, int64_t count,
                        const float* __restrict__ shift, float* __restrict__ out,
                        int* device_errors) {
  const int64_t total = rows * count;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / count;
    const int32_t col = columns[i % count];
    if (col < 0 || col >= cols) {
      if (row == 0) atomicOr(device_errors, kDeviceErrorGatherColumn);
      out[i] = 0.0f;
      continue;
    }
    // A correctly rounded f32 difference; the CPU rounds its exact f64 difference once, so the
    // two agree bit for bit.
    out[i] = ToFloat(x[row * cols + col]) - (shift != nullptr ? shift[row] : 0.0f);
  }
}

}  // namespace

cudaError_t LaunchGatherColumns(DType type, const void* x, int64_t rows, int64_t cols,
                                const int32_t* columns, int64_t count, const float* shift,
                                float* out, int* device_errors, cudaStream_t stream) {
  if (rows == 0 || count == 0) return cudaSuccess;
  return DispatchFloat(type, [&](auto tag) {
    using T = decltype(tag);
    GatherColumnsKernel<T><<<ElementwiseBlocks(rows * count, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(x), rows, cols, columns, count, shift, out, device_errors);
    return cudaGetLastError();
  });
}

}  // namespace glassbox::cuda
