// CUDA, cuBLAS and cuBLASLt results as absl::Status, and a guard that makes the backend's device
// current for the duration of a call. Host-side (C++20) only.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace glassbox::cuda_internal {

// INTERNAL with the CUDA error's name and text (RESOURCE_EXHAUSTED for out-of-memory).
inline absl::Status CudaStatus(cudaError_t err, absl::string_view what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string message = absl::StrCat("cuda ", what, ": ", cudaGetErrorName(err), ": ",
                                           cudaGetErrorString(err));
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

inline absl::Status CublasStatus(cublasStatus_t status, absl::string_view what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message = absl::StrCat("cuda ", what, ": ", cublasGetStatusName(status), ": ",
                                           cublasGetStatusString(status));
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

// Makes `device` current on this thread and restores the previous one on scope exit: the server
// calls the backend from several threads, and another library may have selected another device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current == device) return;
    status_ = CudaStatus(cudaSetDevice(device), "cudaSetDevice");
    if (status_.ok() && current >= 0) previous_ = current;
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  int previous_ = -1;
  absl::Status status_;
};

}  // namespace glassbox::cuda_internal
