// Run-time detection of CUDA devices. Safe on machines with no GPU or no driver: it reports what
// it found instead of failing.
#pragma once

#include <string>

namespace glassbox {

struct CudaProbe {
  bool compiled = false;  // this binary was built with the CUDA backend
  int device_count = 0;   // usable devices (0 when none or no driver)
  std::string detail;     // a sentence for the log: device names, or why there are none
};

CudaProbe ProbeCuda();

}  // namespace glassbox
