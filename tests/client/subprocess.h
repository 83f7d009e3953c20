// Child processes for the client tests: run a command to completion capturing its output, or
// keep a server running for the duration of a test suite.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace glassbox::testing {

struct ProcessResult {
  int exit_code = -1;  // 128 + signal when killed by a signal
  std::string out;
  std::string err;
};

// Runs argv[0] (a path) with the given arguments; kills it after `timeout`.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         absl::Duration timeout = absl::Seconds(120));

// A server started as a child process. Start() waits until it prints a line starting with
// `ready_prefix` on stderr (the rest of the line is "HOST:PORT"); afterwards stderr is drained
// in the background (kept in log()) so that the server never blocks on a full pipe. The
// destructor sends SIGTERM, waits up to 15 s, then SIGKILLs.
class ServerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::vector<std::string>& argv, const std::string& ready_prefix,
      absl::Duration timeout = absl::Seconds(30));
  ~ServerProcess();

  const std::string& address() const { return address_; }  // "127.0.0.1:PORT"
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string log() const;

  // SIGTERM and wait; returns the exit code (128 + signal if it was killed).
  int Stop();

 private:
  ServerProcess() = default;
  void Drain();

  pid_t pid_ = -1;
  int stderr_fd_ = -1;
  std::string address_;
  int port_ = 0;
  mutable std::mutex mu_;
  std::string log_;
  std::thread drainer_;
  int exit_code_ = -1;
};

}  // namespace glassbox::testing
