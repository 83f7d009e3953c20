#include "tests/client/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace glassbox::testing {
namespace {

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

// fork + exec with stdout/stderr redirected to the given fds (-1: inherit). Everything the
// child touches is prepared before fork: only async-signal-safe calls run in between.
pid_t Spawn(const std::vector<std::string>& argv, int out_fd, int err_fd, int close_a,
            int close_b) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
    if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
    if (close_a >= 0) close(close_a);
    if (close_b >= 0) close(close_b);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// waitpid with a deadline; -1 if the child is still running at the deadline.
int WaitFor(pid_t pid, absl::Time deadline) {
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return ExitCodeOf(status);
    if (r < 0 && errno != EINTR) return -1;
    if (absl::Now() >= deadline) return -1;
    usleep(10 * 1000);
  }
}

}  // namespace

ProcessResult RunProcess(const std::vector<std::string>& argv, absl::Duration timeout) {
  ProcessResult result;
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.err = absl::StrCat("pipe: ", std::strerror(errno));
    return result;
  }
  const pid_t pid = Spawn(argv, out_pipe[1], err_pipe[1], out_pipe[0], err_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  const absl::Time deadline = absl::Now() + timeout;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    const int64_t wait_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (wait_ms <= 0) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    if (poll(fds, 2, static_cast<int>(std::min<int64_t>(wait_ms, 1000))) < 0 && errno != EINTR) {
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buffer[8192];
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n > 0) {
        sinks[i]->append(buffer, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (pollfd& fd : fds) {
    if (fd.fd >= 0) close(fd.fd);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = ExitCodeOf(status);
  if (killed) absl::StrAppend(&result.err, "\n[test harness: killed after timeout]");
  return result;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& argv, const std::string& ready_prefix, absl::Duration timeout) {
  if (access(argv[0].c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("server binary ", argv[0], " is not executable"));
  }
  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->pid_ = Spawn(argv, -1, err_pipe[1], err_pipe[0], -1);
  close(err_pipe[1]);
  server->stderr_fd_ = err_pipe[0];
  if (server->pid_ < 0) return absl::InternalError("fork failed");

  // Read stderr until the ready line.
  const absl::Time deadline = absl::Now() + timeout;
  std::string seen;
  while (true) {
    const size_t at = seen.find(ready_prefix);
    const size_t eol = at == std::string::npos ? std::string::npos : seen.find('\n', at);
    if (eol != std::string::npos) {
      server->address_ = seen.substr(at + ready_prefix.size(), eol - at - ready_prefix.size());
      const size_t colon = server->address_.rfind(':');
      if (colon == std::string::npos ||
          !absl::SimpleAtoi(server->address_.substr(colon + 1), &server->port_)) {
        return absl::InternalError(
            absl::StrCat("cannot parse the address in \"", seen.substr(at, eol - at), "\""));
      }
      break;
    }
    const int64_t wait_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (wait_ms <= 0) {
      server->log_ = seen;
      return absl::DeadlineExceededError(absl::StrCat("the server did not print \"", ready_prefix,
                                                      "\" within ", absl::FormatDuration(timeout),
                                                      "; its stderr so far:\n", seen));
    }
    pollfd fd = {server->stderr_fd_, POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(std::min<int64_t>(wait_ms, 200))) <= 0) continue;
    char buffer[4096];
    const ssize_t n = read(server->stderr_fd_, buffer, sizeof(buffer));
    if (n > 0) {
      seen.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      const int code = WaitFor(server->pid_, absl::Now() + absl::Seconds(5));
      server->exit_code_ = code;
      server->pid_ = -1;
      return absl::InternalError(absl::StrCat("the server exited (code ", code,
                                              ") before it was ready; its stderr:\n", seen));
    }
  }
  server->log_ = seen;
  server->drainer_ = std::thread([raw = server.get()] { raw->Drain(); });
  return server;
}

void ServerProcess::Drain() {
  char buffer[4096];
  while (true) {
    const ssize_t n = read(stderr_fd_, buffer, sizeof(buffer));
    if (n > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      log_.append(buffer, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      return;
    }
  }
}

std::string ServerProcess::log() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_;
}

int ServerProcess::Stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    exit_code_ = WaitFor(pid_, absl::Now() + absl::Seconds(15));
    if (exit_code_ < 0) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
      exit_code_ = ExitCodeOf(status);
    }
    pid_ = -1;
  }
  if (drainer_.joinable()) drainer_.join();
  if (stderr_fd_ >= 0) {
    close(stderr_fd_);
    stderr_fd_ = -1;
  }
  return exit_code_;
}

ServerProcess::~ServerProcess() { Stop(); }

}  // namespace glassbox::testing
