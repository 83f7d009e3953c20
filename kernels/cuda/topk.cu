// TopK of each row with torch.topk's order, for any k up to the row length: every element becomes
// one 64-bit key whose descending order is the wanted order (value first, then the lower column),
// CUB's segmented radix sort orders each row, and the first k keys of a row are decoded back to a
// column and the value read from x (so -0.0 and NaN payloads come out unchanged).
//
// The key: the high 32 bits are the float's bits mapped to an unsigned integer in the float's
// order (sign set: all bits inverted; sign clear: sign bit set), with every NaN mapped to the
// largest key and -0.0 to +0.0; the low 32 bits are ~column, so equal values put the lower column
// first. Keys are distinct within a row, so the sort's stability does not matter.
#include <cub/device/device_segmented_radix_sort.cuh>

#include <climits>

#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kAlign = 256;

size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

__device__ __forceinline__ uint32_t OrderedBits(float v) {
  if (isnan(v)) return 0xffffffffu;
  if (v == 0.0f) v = 0.0f;  // -0.0 ties +0.0
  const uint32_t bits = __float_as_uint(v);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    TopKKeysKernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                   unsigned long long* __restrict__ keys, int* __restrict__ offsets) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (int64_t i = first; i < rows * cols; i += stride) {
    const uint32_t column = static_cast<uint32_t>(i % cols);
    keys[i] = (static_cast<unsigned long long>(OrderedBits(ToFloat(x[i]))) << 32) | ~column;
  }
  for (int64_t r = first; r <= rows; r += stride) offsets[r] = static_cast<int>(r * cols);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    TopKDecodeKernel(const T* __restrict__ x, const unsigned long long* __restrict__ sorted,
                     int64_t rows, int64_t cols, int64_t k, T* __restrict__ values,
                     int32_t* __restrict__ indices) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * k;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / k, rank = i % k;
    const uint32_t column = ~static_cast<uint32_t>(sorted[row * cols + rank] & 0xffffffffu);
    values[i] = x[row * cols + column];
    indices[i] = static_cast<int32_t>(column);
  }
}

// CUB's temporary storage for `items` keys in `segments` rows.
cudaError_t SortTempBytes(int64_t items, int64_t segments, size_t* bytes) {
  cub::DoubleBuffer<unsigned long long> keys(nullptr, nullptr);
  *bytes = 0;
  return cub::DeviceSegmentedRadixSort::SortKeysDescending(
      nullptr, *bytes, keys, static_cast<int>(items), static_cast<int>(segments),
      static_cast<const int*>(nullptr), static_cast<const int*>(nullptr));
}

}  // namespace

cudaError_t TopKWorkBytes(int64_t row_count, int64_t cols, size_t* bytes) {
  const int64_t items = row_count * cols;
  if (row_count < 0 || cols <= 0 || cols > INT_MAX || items > INT_MAX) return cudaErrorInvalidValue;
  size_t temp = 0;
  if (const cudaError_t err = SortTempBytes(items, row_count, &temp); err != cudaSuccess) return err;
  const size_t key_bytes = AlignUp(static_cast<size_t>(items) * sizeof(unsigned long long));
  *bytes = 2 * key_bytes + AlignUp(static_cast<size_t>(row_count + 1) * sizeof(int)) + temp;
  return cudaSuccess;
}

cudaError_t LaunchTopK(const TopKArgs& a, int64_t row_begin, int64_t row_count, void* work,
                       size_t work_bytes, cudaStream_t stream) {
  if (row_count == 0 || a.k == 0) return cudaSuccess;
  size_t needed = 0;
  if (const cudaError_t err = TopKWorkBytes(row_count, a.cols, &needed); err != cudaSuccess) {
    return err;
  }
  if (work_bytes < needed) return cudaErrorInvalidValue;
  const int64_t items = row_count * a.cols;
  const size_t key_bytes = AlignUp(static_cast<size_t>(items) * sizeof(unsigned long long));
  char* base = static_cast<char*>(work);
  auto* keys_a = reinterpret_cast<unsigned long long*>(base);
  auto* keys_b = reinterpret_cast<unsigned long long*>(base + key_bytes);
  int* offsets = reinterpret_cast<int*>(base + 2 * key_bytes);
  void* temp = base + 2 * key_bytes + AlignUp(static_cast<size_t>(row_count + 1) * sizeof(int));
  size_t temp_bytes = work_bytes - (static_cast<char*>(temp) - base);

  return DispatchFloat(a.type, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const T* x = static_cast<const T*>(a.x) + row_begin * a.cols;
    TopKKeysKernel<T><<<ElementwiseBlocks(items, kThreads), kThreads, 0, stream>>>(
        x, row_count, a.cols, keys_a, offsets);
    if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
    cub::DoubleBuffer<unsigned long long> keys(keys_a, keys_b);
    if (const cudaError_t err = cub::DeviceSegmentedRadixSort::SortKeysDescending(
            temp, temp_bytes, keys, static_cast<int>(items), static_cast<int>(row_count), offsets,
            offsets + 1, 0, 64, stream);
        err != cudaSuccess) {
      return err;
    }
    TopKDecodeKernel<T><<<ElementwiseBlocks(row_count * a.k, kThreads), kThreads, 0, stream>>>(
        x, keys.Current(), row_count, a.cols, a.k, static_cast<T*>(a.values) + row_begin * a.k,
        a.indices + row_begin * a.k);
    return cudaGetLastError();
  });
}

}  // namespace glassbox::cuda
