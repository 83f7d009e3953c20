// glassboxd: loads models once and serves them over gRPC until SIGTERM, then drains. With
// --api_keys every RPC needs a key from that file, which SIGHUP re-reads.
//
//   glassboxd --model gpt2=/models/gpt2 --model llama=/models/llama --listen 0.0.0.0:50051
//   glassboxd --model gpt2=/models/gpt2 --sae res6=/saes/gpt2-res-6@gpt2
//   glassboxd --model gpt2=/models/gpt2 --api_keys /etc/glassbox/keys.json
//   glassboxd --config /etc/glassbox/config.json
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <omp.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <type_traits>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_probe.h"
#include "nlohmann/json.hpp"
#include "server/service/glassbox_service.h"
#include "server/service/metrics_http.h"
#include "server/service/request_observer.h"
#include "server/service/server_credentials.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "address to serve on; port 0 picks a free port");
ABSL_FLAG(std::string, device, "auto", "auto | cpu | cuda");
ABSL_FLAG(std::string, dtype, "auto", "weights and activations: auto (bf16 on CUDA, f32 on the CPU) | f32 | bf16 | f16");
ABSL_FLAG(std::string, config, "",
          "JSON config file: {\"models\": {NAME: DIR}, \"saes\": {NAME: "
          "\"PATH@MODEL[:HOOK]\" or {\"path\", \"model\", \"hook\", "
          "\"norm_scaling_factor\"}}, \"listen\": ADDR, \"api_keys\": FILE, \"tls_cert\" / \"tls_key\" / \"tls_client_ca\": FILE, \"limits\": "
          "{...}}; flags given on the command line win");
ABSL_FLAG(std::string, api_keys, "",
          "JSON file of API keys: {\"keys\": [{\"name\", \"key\", \"admin\", \"quota\": "
          "{...}}]}; every RPC but health then needs \"authorization: Bearer KEY\". Re-read on "
          "SIGHUP. Unset: the server is open to anyone who reaches it");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain to serve TLS with (with --tls_key); unset: plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM root certificates: with it, every client must present a certificate they signed "
          "(mutual TLS)");
ABSL_FLAG(int64_t, max_batch, 1024, "most rows in one Run");
ABSL_FLAG(int64_t, max_tokens, 1 << 16, "most (padded) tokens in one Run");
ABSL_FLAG(int64_t, max_response_bytes, int64_t{8} << 30, "most tensor bytes one Run may stream");
ABSL_FLAG(int64_t, stream_buffer_bytes, 16 << 20, "bytes buffered per stream before the worker waits for the reader");
ABSL_FLAG(int, cpu_threads, 0,
          "threads of the one OpenMP pool the device's work runs on (the CPU backend's loops and "
          "oneDNN's matrix products); 0: OMP_NUM_THREADS, else every core");
ABSL_FLAG(int64_t, cpu_packed_weight_bytes, int64_t{1} << 30,
          "the CPU backend keeps packed copies of a model's Linear weights (the same products, "
          "5-50% faster) while all models' copies fit in this many bytes; 0: never");
ABSL_FLAG(double, stream_stall_seconds, 10,
          "how long the device's worker waits for a reader whose stream buffer is full before it "
          "gives that stream up (RESOURCE_EXHAUSTED) and goes on with everyone else's work");
ABSL_FLAG(int64_t, max_concurrent_streams, 256,
          "Run and Generate streams open at once; past it a new one is RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, max_request_bytes, 4 << 20,
          "largest request message gRPC accepts (intervention values and patch sources travel in "
          "it); larger ones are RESOURCE_EXHAUSTED before the service sees them");
ABSL_FLAG(int64_t, max_sweep_cells, 1 << 18,
          "cells one PatchingSweep may patch (layers x positions x heads, as its kind has them)");
ABSL_FLAG(int64_t, cache_max_bytes, int64_t{1} << 30,
          "bytes of cached runs (RunRequest.keep) each API key may hold (one budget for all "
          "clients without --api_keys); a key's cache_bytes quota may lower it");
ABSL_FLAG(int64_t, cache_max_entries, 64,
          "cached runs the server holds (per key, as --cache_max_bytes)");
ABSL_FLAG(int64_t, cache_default_ttl_s, 600, "time-to-live of a cached run that asks for none");
ABSL_FLAG(int64_t, cache_max_ttl_s, 86400, "longest time-to-live a cached run may ask for");
ABSL_FLAG(int64_t, max_batch_tokens, 16384,
          "dynamic batching: most rows x padded length when queued Runs of different requests "
          "share one forward pass; 0 runs every request alone");
ABSL_FLAG(int64_t, fair_share_quantum, 2048,
          "tokens each API key's turn adds to its share (deficit round robin between keys)");
ABSL_FLAG(int64_t, memory_budget_bytes, 0,
          "estimated device memory one forward pass may use; a request estimated above it is "
          "RESOURCE_EXHAUSTED, merging stops below it; 0: unlimited");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT to serve Prometheus metrics on (GET /metrics over HTTP); empty: off");
ABSL_FLAG(bool, request_log, true, "log one JSON line per request on stderr");
ABSL_FLAG(std::string, jobs_dir, "",
          "where scan jobs keep their records, checkpoints and results, and resume from after a "
          "restart; empty: jobs live in memory only");
ABSL_FLAG(std::string, corpus_dir, "",
          "the directory scan corpora may be read from (paths are confined to it); empty: "
          "uploaded documents only");
ABSL_FLAG(double, scan_checkpoint_seconds, 30, "how often a running scan writes its checkpoint");
ABSL_FLAG(int64_t, scan_max_contexts, int64_t{1} << 20, "most contexts one scan reads");
ABSL_FLAG(int64_t, scan_max_state_bytes, int64_t{4} << 30,
          "most memory one scan's records and statistics may take (estimated at the start)");
ABSL_FLAG(int64_t, scan_max_jobs_per_key, 16, "scans one key may have queued or running");
ABSL_FLAG(int64_t, scan_replay_bytes, int64_t{1} << 30,
          "memory a scan may keep its first pass's target activations in, so that its second pass "
          "does not run the model again");
ABSL_FLAG(int, drain_seconds, 30, "on SIGTERM, how long in-flight runs may take to finish");

namespace glassbox {
namespace {

// --model and --sae are repeatable (NAME=... each time), which absl's flag types cannot express,
// so those arguments are taken out of argv before absl parses the rest.
std::vector<std::string> TakeRepeatedArgs(int& argc, char** argv, const std::string& name) {
  std::vector<std::string> values;
  const std::string flag = "--" + name, short_flag = "-" + name, prefix = flag + "=";
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == flag || arg == short_flag) && i + 1 < argc) {
      values.push_back(argv[++i]);
    } else if (arg.rfind(prefix, 0) == 0) {
      values.push_back(arg.substr(prefix.size()));
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  return values;
}

// One entry of the config file's "saes": "PATH@MODEL[:HOOK]" or an object.
absl::StatusOr<SaeSpec> SaeSpecFromConfig(const std::string& path, const std::string& name,
                                          const nlohmann::json& entry) {
  if (entry.is_string()) return ParseSaeSpec(absl::StrCat(name, "=", entry.get<std::string>()));
  const std::string where = absl::StrCat(path, ": saes.", name);
  if (!entry.is_object() || !entry.contains("path") || !entry["path"].is_string() ||
      !entry.contains("model") || !entry["model"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        " must be \"PATH@MODEL[:HOOK]\" or {\"path\": ..., \"model\": ..., \"hook\": ..., "
        "\"norm_scaling_factor\": ...}"));
  }
  SaeSpec spec{.name = name,
               .path = entry["path"].get<std::string>(),
               .model = entry["model"].get<std::string>()};
  if (entry.contains("hook")) {
    if (!entry["hook"].is_string())
      return absl::InvalidArgumentError(absl::StrCat(where, ".hook must be a string"));
    spec.hook = entry["hook"].get<std::string>();
  }
  if (entry.contains("norm_scaling_factor")) {
    if (!entry["norm_scaling_factor"].is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".norm_scaling_factor must be a number"));
    }
    spec.norm_scaling_factor = entry["norm_scaling_factor"].get<double>();
  }
  return spec;
}

struct ServerSettings {
  std::vector<ModelSpec> models;
  std::vector<SaeSpec> saes;
  std::string listen;
  std::string api_keys;  // the keys file; empty: open
  std::string metrics_listen;  // empty: no metrics endpoint
  TlsFiles tls;
  ServiceLimits limits;
  SchedulerOptions scheduler;
  ScanJobsOptions jobs;
};

// Names of the flags present in argv ("--name" or "--name=value"), so that the config file
// fills in only what the command line did not say.
std::set<std::string> GivenFlags(int argc, char** argv) {
  std::set<std::string> names;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) continue;
    arg = arg.substr(2);
    names.insert(arg.substr(0, arg.find('=')));
  }
  return names;
}

absl::StatusOr<ServerSettings> Settings(const std::vector<std::string>& model_args,
                                        const std::vector<std::string>& sae_args,
                                        const std::set<std::string>& given) {
  ServerSettings s;
  s.listen = absl::GetFlag(FLAGS_listen);
  s.api_keys = absl::GetFlag(FLAGS_api_keys);
  s.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  s.tls = {.cert = absl::GetFlag(FLAGS_tls_cert),
           .key = absl::GetFlag(FLAGS_tls_key),
           .client_ca = absl::GetFlag(FLAGS_tls_client_ca)};
  s.jobs = {.jobs_dir = absl::GetFlag(FLAGS_jobs_dir),
            .corpus_dir = absl::GetFlag(FLAGS_corpus_dir),
            .checkpoint_seconds = absl::GetFlag(FLAGS_scan_checkpoint_seconds),
            .max_contexts = absl::GetFlag(FLAGS_scan_max_contexts),
            .max_state_bytes = absl::GetFlag(FLAGS_scan_max_state_bytes),
            .max_jobs_per_owner = absl::GetFlag(FLAGS_scan_max_jobs_per_key),
            .replay_bytes = absl::GetFlag(FLAGS_scan_replay_bytes)};
  s.limits.max_batch = absl::GetFlag(FLAGS_max_batch);
  s.limits.max_tokens_per_request = absl::GetFlag(FLAGS_max_tokens);
  s.limits.max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  s.limits.stream_buffer_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_stream_buffer_bytes));
  s.limits.stream_stall = absl::Seconds(absl::GetFlag(FLAGS_stream_stall_seconds));
  s.limits.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  s.scheduler.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  s.scheduler.quantum_tokens = absl::GetFlag(FLAGS_fair_share_quantum);
  s.scheduler.memory_budget_bytes = absl::GetFlag(FLAGS_memory_budget_bytes);
  if (const int threads = absl::GetFlag(FLAGS_cpu_threads); threads > 0) {
    s.scheduler.worker_init = [threads] { omp_set_num_threads(threads); };
  } else if (threads < 0) {
    return absl::InvalidArgumentError("--cpu_threads must be >= 0 (0: OMP_NUM_THREADS or every core)");
  }
  s.limits.max_sweep_cells = absl::GetFlag(FLAGS_max_sweep_cells);
  int64_t default_ttl_s = absl::GetFlag(FLAGS_cache_default_ttl_s);
  int64_t max_ttl_s = absl::GetFlag(FLAGS_cache_max_ttl_s);
  s.limits.cache.max_bytes = absl::GetFlag(FLAGS_cache_max_bytes);
  s.limits.cache.max_entries = absl::GetFlag(FLAGS_cache_max_entries);
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat("--config: cannot open ", path));
    std::stringstream text;
    text << in.rdbuf();
    auto json = nlohmann::json::parse(text.str(), nullptr, false);
    if (json.is_discarded() || !json.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
    }
    if (json.contains("models")) {
      if (!json["models"].is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": \"models\" must map names to directories"));
      for (const auto& [name, dir] : json["models"].items()) {
        if (!dir.is_string()) return absl::InvalidArgumentError(absl::StrCat(path, ": models.", name, " must be a directory path"));
        s.models.push_back({name, dir.get<std::string>()});
      }
    }
    // Like models, SAEs from the file and from --sae are all loaded (a name given twice is an
    // error), since each names something to load rather than a setting to override.
    if (json.contains("saes")) {
      if (!json["saes"].is_object())
        return absl::InvalidArgumentError(absl::StrCat(path, ": \"saes\" must map names to SAEs"));
      for (const auto& [name, entry] : json["saes"].items()) {
        GB_ASSIGN_OR_RETURN(SaeSpec spec, SaeSpecFromConfig(path, name, entry));
        s.saes.push_back(std::move(spec));
      }
    }
    // The config file fills in what the command line did not say.
    if (!given.count("listen") && json.contains("listen") && json["listen"].is_string()) {
      s.listen = json["listen"].get<std::string>();
    }
    if (json.contains("api_keys")) {
      if (!json["api_keys"].is_string() || json["api_keys"].get<std::string>().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": \"api_keys\" must be the path of a keys file"));
      }
      if (!given.count("api_keys")) s.api_keys = json["api_keys"].get<std::string>();
    }
    for (auto [key, field] : {std::pair{"tls_cert", &s.tls.cert}, std::pair{"tls_key", &s.tls.key},
                              std::pair{"tls_client_ca", &s.tls.client_ca},
                              std::pair{"metrics_listen", &s.metrics_listen},
                              std::pair{"jobs_dir", &s.jobs.jobs_dir},
                              std::pair{"corpus_dir", &s.jobs.corpus_dir}}) {
      if (!json.contains(key)) continue;
      if (!json[key].is_string() || json[key].get<std::string>().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": \"", key, "\" must be a non-empty string (a file path; HOST:PORT for metrics_listen)"));
      }
      if (!given.count(key)) *field = json[key].get<std::string>();
    }
    if (json.contains("limits") && json["limits"].is_object()) {
      const auto& l = json["limits"];
      auto from_file = [&](const char* flag, const char* key, int64_t& value) {
        if (!given.count(flag) && l.contains(key) && l[key].is_number_integer()) {
          value = l[key].get<int64_t>();
        }
      };
      from_file("max_batch", "max_batch", s.limits.max_batch);
      from_file("max_tokens", "max_tokens", s.limits.max_tokens_per_request);
      from_file("max_response_bytes", "max_response_bytes", s.limits.max_response_bytes);
      from_file("cache_max_bytes", "cache_max_bytes", s.limits.cache.max_bytes);
      from_file("cache_max_entries", "cache_max_entries", s.limits.cache.max_entries);
      from_file("cache_default_ttl_s", "cache_default_ttl_s", default_ttl_s);
      from_file("cache_max_ttl_s", "cache_max_ttl_s", max_ttl_s);
      from_file("max_concurrent_streams", "max_concurrent_streams",
                s.limits.max_concurrent_streams);
      from_file("max_sweep_cells", "max_sweep_cells", s.limits.max_sweep_cells);
      from_file("max_batch_tokens", "max_batch_tokens", s.scheduler.max_batch_tokens);
      from_file("fair_share_quantum", "fair_share_quantum", s.scheduler.quantum_tokens);
      from_file("memory_budget_bytes", "memory_budget_bytes", s.scheduler.memory_budget_bytes);
      if (!given.count("stream_stall_seconds") && l.contains("stream_stall_seconds") &&
          l["stream_stall_seconds"].is_number()) {
        s.limits.stream_stall = absl::Seconds(l["stream_stall_seconds"].get<double>());
      }
    }
  }
  if (s.scheduler.max_batch_tokens < 0 || s.scheduler.quantum_tokens < 1 ||
      s.scheduler.memory_budget_bytes < 0) {
    return absl::InvalidArgumentError(
        "--max_batch_tokens and --memory_budget_bytes must be at least 0, --fair_share_quantum "
        "at least 1");
  }
  if (s.limits.max_concurrent_streams < 1 || s.limits.max_sweep_cells < 1) {
    return absl::InvalidArgumentError(
        "--max_concurrent_streams and --max_sweep_cells must be at least 1");
  }
  if (s.limits.stream_stall <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--stream_stall_seconds must be positive");
  }
  if (default_ttl_s <= 0 || max_ttl_s < default_ttl_s || s.limits.cache.max_bytes < 0 ||
      s.limits.cache.max_entries < 0) {
    return absl::InvalidArgumentError(
        "cache limits: need 0 < --cache_default_ttl_s <= --cache_max_ttl_s and non-negative "
        "--cache_max_bytes and --cache_max_entries (0 turns keeping off)");
  }
  s.limits.cache.default_ttl = absl::Seconds(default_ttl_s);
  s.limits.cache.max_ttl = absl::Seconds(max_ttl_s);
  for (const std::string& arg : model_args) {
    GB_ASSIGN_OR_RETURN(ModelSpec spec, ParseModelSpec(arg));
    s.models.push_back(spec);
  }
  for (const std::string& arg : sae_args) {
    GB_ASSIGN_OR_RETURN(SaeSpec spec, ParseSaeSpec(arg));
    s.saes.push_back(std::move(spec));
  }
  if (s.models.empty()) {
    return absl::InvalidArgumentError("no models: pass --model NAME=DIR (repeatable) or --config FILE");
  }
  s.scheduler.max_batch_rows = s.limits.max_batch;  // a merged pass holds no more than one Run may
  return s;
}

struct ChosenBackend {
  std::shared_ptr<Backend> backend;
  std::string device;
  DType dtype;
};

absl::StatusOr<DType> ParseDType(const std::string& name, bool cuda) {
  if (name == "auto") return cuda ? DType::kBF16 : DType::kF32;
  if (name == "f32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  if (name == "f16") return DType::kF16;
  return absl::InvalidArgumentError(absl::StrCat("--dtype must be auto, f32, bf16 or f16, got ", name));
}

absl::StatusOr<ChosenBackend> ChooseBackend() {
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "auto" && device != "cpu" && device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--device must be auto, cpu or cuda, got ", device));
  }
  const CudaProbe probe = ProbeCuda();
  std::fprintf(stderr, "glassboxd: CUDA: %s\n", probe.detail.c_str());
  const bool want_cuda = device == "cuda" || (device == "auto" && probe.device_count > 0);
  if (want_cuda) {
    auto cuda = CreateCudaBackend(0);
    if (cuda.ok()) {
      GB_ASSIGN_OR_RETURN(DType dtype, ParseDType(absl::GetFlag(FLAGS_dtype), true));
      std::fprintf(stderr, "glassboxd: backend: cuda:0, weights and activations in %s\n",
                   std::string(DTypeName(dtype)).c_str());
      return ChosenBackend{*std::move(cuda), "cuda:0", dtype};
    }
    if (device == "cuda") return cuda.status();
    std::fprintf(stderr, "glassboxd: CUDA backend unavailable (%s); using the CPU\n",
                 std::string(cuda.status().message()).c_str());
  }
  GB_ASSIGN_OR_RETURN(DType dtype, ParseDType(absl::GetFlag(FLAGS_dtype), false));
  const int64_t packed_bytes = absl::GetFlag(FLAGS_cpu_packed_weight_bytes);
  if (packed_bytes < 0)
    return absl::InvalidArgumentError("--cpu_packed_weight_bytes must be >= 0 (0: never pack)");
  std::fprintf(stderr, "glassboxd: backend: cpu\n");
  return ChosenBackend{
      std::make_shared<CpuBackend>(CpuBackendOptions{.packed_weight_bytes = packed_bytes}), "cpu",
      dtype};
}

// Runs `work` (loading weights) on a thread that ends with it, set up as the scheduler's worker
// is (`init`: --cpu_threads), and returns its result. The OpenMP teams `work` starts end with that
// thread too. The scheduler's worker must be the only thread in the process that keeps an OpenMP
// team: libgomp counts every team's threads, and once there are more than cores it spins only ~100
// times at a barrier before sleeping. Then every parallel region of a small forward pass waits for
// a futex wake. A team left on main after loading made the demo model's 24-token pass take 2.5-4 ms
// at 2 threads instead of 0.8 ms.
template <typename Work>
std::invoke_result_t<Work> OnLoaderThread(const std::function<void()>& init, Work&& work) {
  std::optional<std::invoke_result_t<Work>> result;
  std::thread([&] {
    if (init) init();
    result.emplace(work());
  }).join();
  return *std::move(result);
}

// The keys file, or null for an open server; either way one line of the log says which.
absl::StatusOr<std::unique_ptr<ApiKeyStore>> LoadKeys(const std::string& path) {
  if (path.empty()) {
    std::fprintf(stderr,
                 "glassboxd: no --api_keys: the server is open, every client that reaches it may "
                 "call every RPC\n");
    return nullptr;
  }
  GB_ASSIGN_OR_RETURN(std::unique_ptr<ApiKeyStore> keys, ApiKeyStore::Load(path));
  std::fprintf(stderr,
               "glassboxd: API keys: %zu from %s (%zu admin); every RPC but health needs "
               "\"authorization: Bearer KEY\"; SIGHUP re-reads the file\n",
               keys->size(), path.c_str(), keys->admins());
  return keys;
}

// SIGHUP: re-read the keys file. A file that does not parse leaves the keys in use.
void ReloadKeys(ApiKeyStore* keys) {
  if (keys == nullptr) {
    std::fprintf(stderr, "glassboxd: SIGHUP received; no --api_keys file to re-read\n");
    return;
  }
  if (absl::Status reloaded = keys->Reload(); !reloaded.ok()) {
    std::fprintf(stderr, "glassboxd: SIGHUP: keeping the API keys in use (%zu): %s\n", keys->size(),
                 std::string(reloaded.message()).c_str());
    return;
  }
  std::fprintf(stderr, "glassboxd: SIGHUP: reloaded API keys: %zu from %s (%zu admin)\n",
               keys->size(), keys->path().c_str(), keys->admins());
}

int Main(int argc, char** argv) {
  // Block the shutdown and reload signals before any thread exists, so every thread inherits the
  // mask and only the sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::vector<std::string> model_args = TakeRepeatedArgs(argc, argv, "model");
  std::vector<std::string> sae_args = TakeRepeatedArgs(argc, argv, "sae");
  absl::SetProgramUsageMessage(
      "Serves models over gRPC.\n  glassboxd --model NAME=DIR [--model NAME=DIR ...] "
      "[--sae NAME=PATH@MODEL[:HOOK] ...] [--listen ADDR] [--device auto|cpu|cuda] [--config "
      "FILE]");
  absl::ParseCommandLine(argc, argv);
  auto settings = Settings(model_args, sae_args, GivenFlags(argc, argv));
  if (!settings.ok()) {
    std::fprintf(stderr, "glassboxd: %s\n", std::string(settings.status().message()).c_str());
    return 2;
  }
  auto keys = LoadKeys(settings->api_keys);
  if (!keys.ok()) {
    std::fprintf(stderr, "glassboxd: --api_keys: %s\n",
                 std::string(keys.status().message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_request_bytes) < 1) {
    std::fprintf(stderr, "glassboxd: --max_request_bytes must be at least 1\n");
    return 2;
  }
  auto credentials = MakeServerCredentials(settings->tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "glassboxd: %s\n", std::string(credentials.status().message()).c_str());
    return 2;
  }
  std::fprintf(stderr, "glassboxd: transport: %s\n", DescribeTransport(settings->tls).c_str());
  auto backend = ChooseBackend();
  if (!backend.ok()) {
    std::fprintf(stderr, "glassboxd: %s\n", std::string(backend.status().message()).c_str());
    return 2;
  }
  auto store = OnLoaderThread(settings->scheduler.worker_init, [&] {
    return ModelStore::Load(settings->models, backend->backend, backend->device, backend->dtype);
  });
  if (!store.ok()) {
    std::fprintf(stderr, "glassboxd: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  for (const auto& [name, served] : (*store)->models()) {
    std::fprintf(stderr, "glassboxd: loaded %s (%s, %lld layers) from %s%s\n", name.c_str(),
                 served->model->config().model_type.c_str(),
                 static_cast<long long>(served->model->config().n_layers), served->directory.c_str(),
                 served->tokenizer ? " with its tokenizer" : "");
  }
  if (const auto* cpu = dynamic_cast<const CpuBackend*>(backend->backend.get())) {
    std::fprintf(stderr,
                 "glassboxd: Linear weights packed for the CPU's GEMMs: %.1f MiB (of at most %.0f "
                 "MiB, --cpu_packed_weight_bytes)\n",
                 static_cast<double>(cpu->packed_weight_bytes()) / (1 << 20),
                 static_cast<double>(absl::GetFlag(FLAGS_cpu_packed_weight_bytes)) / (1 << 20));
  }
  if (absl::Status loaded = OnLoaderThread(settings->scheduler.worker_init,
                                           [&] { return (*store)->LoadSaes(settings->saes); });
      !loaded.ok()) {
    std::fprintf(stderr, "glassboxd: %s\n", std::string(loaded.message()).c_str());
    return 1;
  }
  for (const auto& [name, served] : (*store)->saes()) {
    const SaeConfig& c = served->sae->config();
    std::fprintf(
        stderr,
        "glassboxd: loaded SAE %s (%s, d_in %lld, d_sae %lld, %.1f MiB) on %s at %s from %s\n",
        name.c_str(), std::string(SaeArchitectureName(c.architecture)).c_str(),
        static_cast<long long>(c.d_in), static_cast<long long>(c.d_sae),
        static_cast<double>(served->sae->ResidentBytes()) / (1 << 20),
        served->served_model->name.c_str(), served->hook_name.c_str(), served->path.c_str());
    for (const std::string& warning : c.warnings) {
      std::fprintf(stderr, "glassboxd: SAE %s: warning: %s\n", name.c_str(), warning.c_str());
    }
  }

  Scheduler scheduler(settings->scheduler);
  std::fprintf(stderr,
               "glassboxd: scheduler: fair share between keys (quantum %lld tokens), %s, memory "
               "budget %s\n",
               static_cast<long long>(settings->scheduler.quantum_tokens),
               settings->scheduler.max_batch_tokens > 0
                   ? absl::StrCat("runs merged up to ", settings->scheduler.max_batch_tokens,
                                  " batch tokens").c_str()
                   : "every request alone",
               settings->scheduler.memory_budget_bytes > 0
                   ? absl::StrCat(settings->scheduler.memory_budget_bytes, " bytes").c_str()
                   : "unlimited");
  GlassboxService service(**store, scheduler, settings->limits, &absl::Now, keys->get());
  ScanJobs scan_jobs(**store, scheduler, settings->jobs);
  if (absl::Status recovered = scan_jobs.Recover(); !recovered.ok()) {
    std::fprintf(stderr, "glassboxd: %s\n", std::string(recovered.message()).c_str());
    return 1;
  }
  service.SetScanJobs(&scan_jobs);
  std::fprintf(stderr, "glassboxd: scan jobs: %s, corpora %s\n",
               settings->jobs.jobs_dir.empty()
                   ? "in memory (no --jobs_dir: they do not survive a restart)"
                   : absl::StrCat("kept in ", settings->jobs.jobs_dir).c_str(),
               settings->jobs.corpus_dir.empty()
                   ? "uploaded only (no --corpus_dir)"
                   : absl::StrCat("read from ", settings->jobs.corpus_dir).c_str());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(settings->listen, *credentials, &port);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_request_bytes));
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> observers;
  observers.push_back(std::make_unique<RequestObserverFactory>(&service.metrics(),
                                                               absl::GetFlag(FLAGS_request_log)));
  builder.experimental().SetInterceptorCreators(std::move(observers));
  std::unique_ptr<MetricsHttpServer> metrics;
  if (!settings->metrics_listen.empty()) {
    auto started = MetricsHttpServer::Start(settings->metrics_listen,
                                            [&service] { return service.MetricsText(); });
    if (!started.ok()) {
      std::fprintf(stderr, "glassboxd: %s\n", std::string(started.status().message()).c_str());
      return 1;
    }
    metrics = *std::move(started);
    const std::string metrics_host =
        settings->metrics_listen.substr(0, settings->metrics_listen.rfind(':'));
    std::fprintf(stderr, "glassboxd: metrics on http://%s:%d/metrics\n", metrics_host.c_str(),
                 metrics->port());
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "glassboxd: cannot listen on %s\n", settings->listen.c_str());
    return 1;
  }
  // The default health service answers for "" (the whole server); name our service too, so
  // probes that ask for it by name (Kubernetes grpc probes with `service:`) get an answer.
  server->GetHealthCheckService()->SetServingStatus(glassbox::v1::Glassbox::service_full_name(), true);
  const std::string host = settings->listen.substr(0, settings->listen.rfind(':'));
  std::fprintf(stderr, "glassboxd: listening on %s:%d\n", host.c_str(), port);

  int signal_number = 0;
  for (;;) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    ReloadKeys(keys->get());
  }
  std::fprintf(stderr, "glassboxd: %s received; draining (up to %d s)\n",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT", absl::GetFlag(FLAGS_drain_seconds));
  server->GetHealthCheckService()->SetServingStatus(false);
  service.StartDraining();
  scan_jobs.Stop();  // a running scan stops between batches, resumable from its checkpoint
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds)));
  scheduler.Shutdown();
  std::fprintf(stderr, "glassboxd: stopped\n");
  return 0;
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) { return glassbox::Main(argc, argv); }
