// Embedding gather: out[i, :] = table[ids[i], :], copied as raw elements of 2, 4 or 8 bytes so
// one kernel serves every dtype (and the engine's gather of last-token rows). An id outside the
// table writes zeros and raises a device error bit instead of reading out of bounds. ScatterRows
// is the inverse (a KV cache's writes), with the same bounds rule.
#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

constexpr int kThreads = 256;

template <typename Word>
__global__ void EmbeddingKernel(const Word* __restrict__ table, int64_t vocab, int64_t dim,
                                const int32_t* __restrict__ ids, int64_t n, Word* __restrict__ out,
                                int* device_errors) {
  const int64_t total = n * dim;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / dim, col = idx % dim;
    const int32_t id = ids[row];
    if (id < 0 || id >= vocab) {
      if (col == 0) atomicOr(device_errors, kDeviceErrorEmbeddingId);
      out[idx] = Word{0};
      continue;
    }
    out[idx] = table[id * dim + col];
  }
}

template <typename Word>
__global__ void ScatterRowsKernel(const Word* __restrict__ src, const int32_t* __restrict__ rows,
                                  int64_t n, int64_t dim, Word* __restrict__ table,
                                  int64_t table_rows, int* device_errors) {
  const int64_t total = n * dim;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / dim, col = idx % dim;
    const int32_t row = rows[i];
    if (row < 0 || row >= table_rows) {
      if (col == 0) atomicOr(device_errors, kDeviceErrorEmbeddingId);
      continue;
    }
    table[row * dim + col] = src[idx];
  }
}

template <typename Word>
cudaError_t LaunchScatter(const void* src, const int32_t* rows, int64_t n, int64_t dim,
                          void* table, int64_t table_rows, int* device_errors,
                          cudaStream_t stream) {
  ScatterRowsKernel<Word><<<ElementwiseBlocks(n * dim, kThreads), kThreads, 0, stream>>>(
      static_cast<const Word*>(src), rows, n, dim, static_cast<Word*>(table), table_rows,
      device_errors);
  return cudaGetLastError();
}

template <typename Word>
cudaError_t Launch(const void* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n,
                   void* out, int* device_errors, cudaStream_t stream) {
  EmbeddingKernel<Word><<<ElementwiseBlocks(n * dim, kThreads), kThreads, 0, stream>>>(
      static_cast<const Word*>(table), vocab, dim, ids, n, static_cast<Word*>(out), device_errors);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchEmbedding(int element_bytes, const void* table, int64_t vocab, int64_t dim,
                            const int32_t* ids, int64_t n, void* out, int* device_errors,
                            cudaStream_t stream) {
  if (n == 0 || dim == 0) return cudaSuccess;
  switch (element_bytes) {
    case 2: return Launch<uint16_t>(table, vocab, dim, ids, n, out, device_errors, stream);
    case 4: return Launch<uint32_t>(table, vocab, dim, ids, n, out, device_errors, stream);
    case 8: return Launch<unsigned long long>(table, vocab, dim, ids, n, out, device_errors, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t LaunchScatterRows(int element_bytes, const void* src, const int32_t* rows, int64_t n,
                              int64_t dim, void* table, int64_t table_rows, int* device_errors,
                              cudaStream_t stream) {
  if (n == 0 || dim == 0) return cudaSuccess;
  switch (element_bytes) {
    case 2: return LaunchScatter<uint16_t>(src, rows, n, dim, table, table_rows, device_errors, stream);
    case 4: return LaunchScatter<uint32_t>(src, rows, n, dim, table, table_rows, device_errors, stream);
    case 8:
      return LaunchScatter<unsigned long long>(src, rows, n, dim, table, table_rows, device_errors,
                                               stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace glassbox::cuda
